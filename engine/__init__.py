"""ColorFlow engine: everything that is not Qt (chapters, retrieval, models, pipeline, CLI)."""

__version__ = "0.1.0"
