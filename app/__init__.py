"""ColorFlow desktop GUI (Qt); talks to the engine only through app/worker.py."""
