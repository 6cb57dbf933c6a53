"""Application settings (platformdirs config folder, JSON written atomically) and their dialog."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from engine.io.fileio import atomic_write_json
from engine.paths import config_dir
from engine.session import RunSettings

SETTINGS_FILE = "settings.json"
MAX_RECENT = 10


@dataclass
class AppSettings:
    run: RunSettings = field(default_factory=RunSettings)
    recent: list[str] = field(default_factory=list)
    projects_dir: str | None = None  # where chapter projects go; None = beside each chapter

    def remember(self, path: str) -> None:
        self.recent = [path] + [p for p in self.recent if p != path]
        del self.recent[MAX_RECENT:]


def load_settings() -> AppSettings:
    """Saved settings, or defaults when none (or unreadable: never blocks start-up)."""
    try:
        data = json.loads((config_dir() / SETTINGS_FILE).read_text())
        known = set(RunSettings.__dataclass_fields__)
        run = RunSettings(**{k: v for k, v in data.get("run", {}).items() if k in known})
        return AppSettings(run, [str(p) for p in data.get("recent", [])][:MAX_RECENT], data.get("projects_dir"))
    except (OSError, ValueError, TypeError):
        return AppSettings()


def save_settings(settings: AppSettings) -> None:
    atomic_write_json(
        config_dir() / SETTINGS_FILE,
        {"run": asdict(settings.run), "recent": settings.recent, "projects_dir": settings.projects_dir},
    )


SIZES = ["auto", "640x640", "512x800", "800x512"]


def _choice_box(choices: list[tuple[str, str]], current: str, tooltip: str) -> QComboBox:
    """A combo box of (label, value) choices showing `current` (the first when unknown)."""
    box = QComboBox()
    for label, value in choices:
        box.addItem(label, value)
    box.setCurrentIndex(max(0, box.findData(current)))
    box.setToolTip(tooltip)
    return box


class SettingsDialog(QDialog):
    """Device, steps, seed, working size, input style, procedure, keep-ink, low-VRAM, export format, models, and the
    folder for chapter projects (outputs)."""

    def __init__(self, settings: AppSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        run = self._run = settings.run
        form = QFormLayout(self)
        self.models = QComboBox()
        self.models.setEditable(True)
        self.models.addItems(["official", "tiny"])
        self.models.setCurrentText(run.models)
        self.models.setToolTip("official: real colors (download once); tiny: random models for trying the app; or a models folder")
        self.device = QComboBox()
        self.device.addItems(["auto", "cuda", "mps", "cpu"])
        self.device.setCurrentText(run.device)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100)
        self.steps.setValue(run.steps)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2_000_000_000)
        self.seed.setValue(run.seed)
        self.size = QComboBox()
        self.size.addItems(SIZES)
        if run.size and run.size not in SIZES:  # e.g. the demo's small size: kept, not reset
            self.size.addItem(run.size)
        self.size.setCurrentText(run.size or "auto")
        self.keep_ink = QCheckBox("take lightness from the original page (line art stays exact)")
        self.keep_ink.setChecked(run.keep_ink)
        self.low_vram = QCheckBox("keep every model on the CPU except while it runs (8 GB cards; slower)")
        self.low_vram.setChecked(run.low_vram)
        self.input_style = _choice_box(
            [("ScreenStyle pass (official)", "screen"), ("plain grayscale", "gray")], run.input_style,
            "ScreenStyle: each page is first re-screened by the official ScreenVAE pass and blended 50/50 with "
            "its grayscale, as the official app does (the models were trained on such inputs).\n"
            "Plain grayscale: the page as it is, for pages that need no re-screening.",
        )
        self.procedure = _choice_box(
            [("ours (faster, own noise streams)", "ours"), ("official (the official app, draw for draw)", "official")],
            run.procedure,
            "Ours: each random draw has its own stream of the seed, the guide runs once per step, pages are "
            "letterboxed (never cropped) and keep their own size.\n"
            "Official: reproduces the official app's colors for a seed: pages centre-cropped to the working "
            "aspect, output at 1.5x the working size, no keep-ink.\n"
            "Both are equally good colorings; the same seed gives different colors in each.",
        )
        self.procedure.currentIndexChanged.connect(self._procedure_changed)
        self.export_format = QComboBox()
        self.export_format.addItems(["cbz", "png", "ora", "psd"])
        self.export_format.setCurrentText(run.export_format)
        form.addRow("Models", self.models)
        form.addRow("Device", self.device)
        form.addRow("Denoising steps", self.steps)
        form.addRow("Seed", self.seed)
        form.addRow("Working size", self.size)
        form.addRow("Input style", self.input_style)
        form.addRow("Procedure", self.procedure)
        form.addRow("Keep ink", self.keep_ink)
        form.addRow("Low VRAM", self.low_vram)
        form.addRow("Export format", self.export_format)
        self.projects_dir = QLineEdit(settings.projects_dir or "")
        self.projects_dir.setPlaceholderText("beside each chapter (<chapter>.colorflow)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.projects_dir, 1)
        row.addWidget(browse)
        form.addRow("Projects and outputs", row)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self._procedure_changed()

    def _procedure_changed(self) -> None:
        # the official procedure has no keep-ink: say so rather than ignore the box
        official = self.procedure.currentData() == "official"
        self.keep_ink.setEnabled(not official)
        self.keep_ink.setToolTip("not part of the official procedure" if official else "")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for chapter projects and outputs")
        if folder:
            self.projects_dir.setText(folder)

    def chosen_projects_dir(self) -> str | None:
        return self.projects_dir.text().strip() or None

    def result_settings(self) -> RunSettings:
        size = self.size.currentText()
        return replace(
            self._run,
            models=self.models.currentText().strip() or "official",
            device=self.device.currentText(),
            steps=self.steps.value(),
            seed=self.seed.value(),
            size=None if size == "auto" else size,
            keep_ink=self.keep_ink.isChecked(),
            low_vram=self.low_vram.isChecked(),
            input_style=self.input_style.currentData(),
            procedure=self.procedure.currentData(),
            export_format=self.export_format.currentText(),
        )
