"""RAP: retrieval-augmented patches (paper 3.1): CLIP embeddings, top-3 picks, canvas and mask."""
