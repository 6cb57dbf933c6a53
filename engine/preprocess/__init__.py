"""Page preprocessing before retrieval: the official ScreenStyle pass."""
