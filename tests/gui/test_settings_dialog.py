"""The settings dialog shows exactly the run options a colorist chooses, with the command line's
choices, ranges and defaults (expectations written by hand from the README and issue 21)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from PySide6.QtGui import QValidator  # noqa: E402
from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox  # noqa: E402

from app.settings import AppSettings, SettingsDialog  # noqa: E402

# row label -> (allowed values, default) ; None: not a list of choices
ROWS = {
    "Models": (None, "official"),
    "Device": (["auto", "cuda", "mps", "cpu"], "auto"),
    "Denoising steps": ((1, 100), 10),
    # the CLI's --guidance (no upper bound; the box stops at 30); unset (-0.5 shows "auto"): each page's
    # family's official default (issue 24: 7.5 SD, 4.5 PixArt)
    "Guidance": ((-0.5, 30.0), -0.5),
    "Seed": ((0, 2**63 - 1), 0),
    "Working size": (["auto", "640x640", "512x800", "800x512"], "auto"),
    "Input style": (["screen", "gray", "sketch", "sketch-shading", "auto"], "screen"),
    "Procedure": (["ours", "official"], "ours"),
    "Keep ink": (None, True),
    "Low VRAM": (None, False),
    "Max VRAM (GiB)": ((0.0, 1024.0), 0.0),  # issue 23: 0 shows "none", no limit (the declared default)
    "Rolling references": (None, False),  # issue 25: opt-in, as the CLI's --rolling-refs
    "Export format": (["cbz", "png", "ora", "psd"], "cbz"),
    "Ray cluster": (None, ""),  # issue 26: empty = off; "local" or HOST:PORT
    "Ray workers": ((0, 2**31 - 1), 0),  # issue 26: 0 shows "auto", one per GPU Ray sees
    "Projects and outputs": (None, None),
}


def rows(dialog) -> dict:
    form = dialog.layout()
    found = {}
    for row in range(form.rowCount()):
        label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
        field = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
        if label is not None and label.widget() is not None:
            found[label.widget().text()] = field.widget() or field.layout()
    return found


def test_dialog_rows_are_the_declared_options_with_their_choices_ranges_and_defaults(qtbot):
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    found = rows(dialog)
    assert set(found) == set(ROWS)
    for label, (allowed, default) in ROWS.items():
        widget = found[label]
        if isinstance(widget, QComboBox) and not widget.isEditable():
            values = [str(widget.itemData(i) or widget.itemText(i)) for i in range(widget.count())]
            assert values == allowed, label
            assert str(widget.currentData() or widget.currentText()) == default, label
        elif isinstance(widget, QComboBox):  # models: a source name or a folder
            assert widget.currentText() == default
        elif isinstance(widget, (QSpinBox, QDoubleSpinBox)):
            assert (widget.minimum(), widget.maximum(), widget.value()) == (*allowed, default), label
        elif isinstance(widget, QLineEdit):  # the seed: wider than a spin box holds
            low, high = allowed
            validator = widget.validator()
            assert widget.text() == str(default)
            for text, state in ((str(high), QValidator.State.Acceptable), (str(low), QValidator.State.Acceptable),
                                (str(high + 1), QValidator.State.Invalid), ("-1", QValidator.State.Invalid)):
                assert validator.validate(text, 0)[0] == state, (label, text)
        elif isinstance(widget, QCheckBox):
            assert widget.isChecked() == default, label


def test_untouched_dialog_gives_the_default_pipeline_settings(qtbot):
    from engine.core.options import RunSettings
    from engine.pipelines.settings import pipeline_settings

    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    assert pipeline_settings(dialog.result_settings()) == pipeline_settings(RunSettings())


def test_largest_seed_round_trips_and_official_turns_keep_ink_off(qtbot):
    from engine.pipelines.settings import pipeline_settings

    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    rows(dialog)["Seed"].setText(str(2**63 - 1))
    procedure = rows(dialog)["Procedure"]
    procedure.setCurrentIndex(procedure.findData("official"))
    result = dialog.result_settings()
    assert result.seed == 2**63 - 1
    settings = pipeline_settings(result)  # no conflict: the checked keep-ink box is not the official's
    assert (settings.keep_ink, settings.output_size, settings.procedure) == (False, "gsrp", "official")
