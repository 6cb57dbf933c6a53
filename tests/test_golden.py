"""Golden pixel slices of the tiny pipeline (seed 7, 2 steps) on every path a user can take, from a reviewed run.

The expectations are tests/data/golden/*.json, written by scripts/regenerate_goldens.py from the
reviewed run of the committed code; a change of colors, framing or size shows here. They pin more
than ±TOLERANCE uint8 levels only, the room float sums need across CPUs.
"""

from __future__ import annotations

import numpy as np
import pytest

import golden
from keep_ink_by_hand import keep_ink_by_hand, lab


@pytest.fixture(scope="module")
def golden_run(tiny_models_dir, tmp_path_factory):
    """Each path's colored page, run once per module when first asked for (runs share G and embedding caches)."""
    folder, done = tmp_path_factory.mktemp("golden"), {}

    def run(name: str) -> np.ndarray:
        if name not in done:
            done[name] = golden.run_path(tiny_models_dir, folder, name)
        return done[name]

    return run


def test_tiny_weights_are_the_reviewed_ones(tiny_models_dir):
    """make_tiny(seed 0) gives the same values on every run and machine, else no golden below means anything."""
    expected = golden.load_expected("tiny_weights")["sums"]
    actual = golden.weight_sums(tiny_models_dir)
    assert sorted(actual) == sorted(expected)
    changed = {name: (actual[name], sums) for name, sums in expected.items()
               if actual[name] != pytest.approx(sums, rel=1e-6, abs=1e-3)}
    assert not changed, f"tiny weights changed (got, expected): {changed}; the goldens hold only for the reviewed weights"


@pytest.mark.parametrize("name", list(golden.PATHS))
def test_colored_page_keeps_its_golden_slices(golden_run, name):
    assert golden.differences(golden.load_expected(name), golden.slices(golden_run(name))) == []


def test_screenstyle_g_keeps_its_golden_slices(tiny_models_dir):
    assert golden.differences(golden.load_expected("screenstyle_g"), golden.slices(golden.screenstyle_g(tiny_models_dir))) == []


def test_the_default_page_is_keep_ink_of_the_page_and_the_colored_page_without_it(golden_run):
    """The last step of the default path is keep-ink, by its documented rule (computed by hand here),
    on the page at its own size and the output of the same run without keep-ink. Where the result
    leaves the sRGB gamut (the page's white with any chroma) the rule keeps the lightness and the hue
    and gives up chroma."""
    page = np.asarray(golden.crafted_page())
    colored, actual = golden_run("no_keep_ink"), golden_run("default")
    expected, in_gamut = keep_ink_by_hand(page, colored)
    assert in_gamut.mean() > 0.3
    assert np.abs(actual.astype(int)[in_gamut] - expected[in_gamut]).max() <= 1
    page_lightness = lab(np.repeat(page[..., None], 3, axis=-1))[..., 0]
    actual_lab = lab(actual)
    assert np.abs(actual_lab[..., 0] - page_lightness).max() < 0.5
    wanted_ab = lab(colored)[..., 1:] * np.clip(page_lightness / 15, 0, 1)[..., None]
    got_ab = actual_lab[..., 1:]
    outside = ~in_gamut
    wanted_chroma, got_chroma = np.hypot(*np.moveaxis(wanted_ab, -1, 0)), np.hypot(*np.moveaxis(got_ab, -1, 0))
    assert (got_chroma[outside] <= wanted_chroma[outside] + 1).all()
    visible = outside & (got_chroma > 3)
    cosine = (got_ab[visible] * wanted_ab[visible]).sum(-1) / (got_chroma[visible] * wanted_chroma[visible])
    assert cosine.min() > 0.98


def test_the_comparison_passes_float_noise_and_fails_a_change_of_three_levels():
    expected = golden.load_expected("default")
    pixels = np.zeros(expected["shape"], np.uint8)
    within = golden.slices(pixels)
    for key in ("corner", "centre", "disc_edge", "ink"):
        within[key] = (np.asarray(expected[key]) + golden.TOLERANCE).tolist()
    within["mean"] = expected["mean"]
    assert golden.differences(expected, within) == []
    beyond = dict(within, centre=(np.asarray(expected["centre"]) - 3).tolist())
    assert [line.split(":")[0] for line in golden.differences(expected, beyond)] == ["centre"]
    assert golden.differences(expected, dict(within, shape=[1, 1, 3])) == [f"shape [1, 1, 3], expected {expected['shape']}"]
