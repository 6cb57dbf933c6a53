"""The chapter project: its state, saved atomically, and the versioned schema of its file."""
