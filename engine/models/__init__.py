"""Model files: the common layout, hub download and verification, safe checkpoint reading."""

from engine.models.sources import (
    GRAYSD_SUBDIR,
    IMAGE_ENCODER_SUBDIR,
    ModelPaths,
    fingerprint_models,
    official_models,
)

__all__ = ["GRAYSD_SUBDIR", "IMAGE_ENCODER_SUBDIR", "ModelPaths", "fingerprint_models", "official_models"]
