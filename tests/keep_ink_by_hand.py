"""Keep-ink by hand, from its documented rule and the textbook sRGB/CIELAB (D65) formulas (no skimage).

The rule (README "Output", engine.gsrp.upscale.keep_ink): CIELAB lightness from the gray page, a*
and b* from the colored page, the chroma scaled by clip(L / 15, 0, 1) so ink stays ink; back to
sRGB, each channel * 255 + 0.5 truncated. Pixels whose result leaves the sRGB gamut are flagged:
there the code trades chroma for gamut by a search, which this page does not redo.
"""

from __future__ import annotations

import numpy as np

INK_FADE_BELOW_L = 15.0
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                       [0.212671, 0.715160, 0.072169],
                       [0.019334, 0.119193, 0.950227]])
EPSILON = (6 / 29) ** 3


def _linear(srgb: np.ndarray) -> np.ndarray:
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _gamma(linear: np.ndarray) -> np.ndarray:
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.abs(linear) ** (1 / 2.4) - 0.055)


def lab(rgb_uint8: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> CIELAB (..., 3)."""
    xyz = _linear(rgb_uint8 / 255.0) @ RGB_TO_XYZ.T / WHITE_D65
    f = np.where(xyz > EPSILON, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def rgb_from_lab(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB -> (sRGB in [0, 1], unclipped; whether each pixel is inside the gamut)."""
    fy = (values[..., 0] + 16) / 116
    f = np.stack([fy + values[..., 1] / 500, fy, fy - values[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * WHITE_D65
    linear = xyz @ np.linalg.inv(RGB_TO_XYZ).T
    in_gamut = np.all((linear >= -1e-6) & (linear <= 1 + 1e-6), axis=-1)
    return _gamma(np.clip(linear, 0, 1)), in_gamut


def keep_ink_by_hand(gray_page: np.ndarray, colored: np.ndarray,
                     fade_below_l: float = INK_FADE_BELOW_L) -> tuple[np.ndarray, np.ndarray]:
    """(the keep-ink result as ints, in-gamut mask) for a gray page (H, W) uint8 and a colored page
    (H, W, 3); `fade_below_l=0` leaves the chroma unfaded."""
    lightness = lab(np.repeat(gray_page[..., None], 3, axis=-1))[..., 0]
    mixed = lab(colored)
    mixed[..., 0] = lightness
    if fade_below_l > 0:
        mixed[..., 1:] *= np.clip(lightness / fade_below_l, 0, 1)[..., None]
    rgb, in_gamut = rgb_from_lab(mixed)
    return (rgb * 255 + 0.5).astype(int), in_gamut
