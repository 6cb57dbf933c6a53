"""Model sources resolved once to typed paths; presets, hub download and pins, folder records; loading, tiny builders and layout conversion (above the stages: they build the stages' networks)."""

from engine.models.sources import (
    GRAYSD_SUBDIR,
    IMAGE_ENCODER_SUBDIR,
    ModelPaths,
    fingerprint_models,
    official_models,
)

__all__ = ["GRAYSD_SUBDIR", "IMAGE_ENCODER_SUBDIR", "ModelPaths", "fingerprint_models", "official_models"]
