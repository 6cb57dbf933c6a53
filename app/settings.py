"""Application settings and their dialog (settings.json on disk: app/settings_store.py)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field, replace

from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from engine.core.options import OPTIONS, Option, RunSettings, fixed_by

from .window_layout import WrappingLabel

MAX_RECENT = 10


@dataclass
class AppSettings:
    run: RunSettings = field(default_factory=RunSettings)
    recent: list[str] = field(default_factory=list)
    projects_dir: str | None = None  # where chapter projects go; None = beside each chapter
    window: dict = field(default_factory=dict)  # the main window's geometry and docks (app/window_layout.py)

    def remember(self, path: str) -> None:
        self.recent = [path] + [p for p in self.recent if p != path]
        del self.recent[MAX_RECENT:]


# The run options a colorist sets here, in this order; each row is built from its declaration
# (engine/core/options.py): label, tooltip, allowed values, range and default.
DIALOG_OPTIONS = ("models", "device", "steps", "guidance", "seed", "size", "input_style", "procedure", "keep_ink", "low_vram",
                  "max_vram", "rolling_refs", "export_format", "ray", "workers")
RAY_OPTIONS = ("ray", "workers")  # need the studio extra: disabled, saying how to get it, where Ray is not installed
AUTO_SIZE = "auto"  # the size row's text for None: the official size nearest each page's aspect
SPIN_BOX_MAX = 2**31 - 1  # a QSpinBox holds 32 bits; wider ranges (the seed) get a checked text field
FLOAT_BOX_MAX = 30.0  # a number without an upper bound (guidance) needs one in a spin box; past ~20 colors burn out
OPTIONAL_FLOAT_MAX = 1024.0  # the upper bound of an optional number's box (max VRAM in GiB)
NO_VALUE = "none"  # an optional number's box at its minimum (0): no value, the declared default (no limit)
# An optional number whose range starts at 0 (guidance): one step below 0 shows this, no value: the
# declared default (each page's family's official guidance)
AUTO_VALUE = "auto"
FLOAT_STEP = 0.5


class _RangeValidator(QValidator):
    """Whole numbers in [low, high], however wide (QIntValidator stops at 32 bits)."""

    def __init__(self, low: int, high: int, parent=None) -> None:
        super().__init__(parent)
        self.low, self.high = low, high

    def validate(self, text: str, pos: int):
        if not text:
            return QValidator.State.Intermediate, text, pos
        if not (text.isascii() and text.isdigit()) or int(text) > self.high:
            return QValidator.State.Invalid, text, pos
        state = QValidator.State.Acceptable if int(text) >= self.low else QValidator.State.Intermediate
        return state, text, pos


def _sizes(current: str | None) -> list[str]:
    from engine.core.geometry import OFFICIAL_SIZES

    sizes = [AUTO_SIZE, *(f"{w}x{h}" for w, h in OFFICIAL_SIZES)]
    return sizes + [current] if current and current not in sizes else sizes  # e.g. the demo's: kept, not reset


def _option_widget(option: Option, value) -> QWidget:
    """The dialog's field for one declared option, showing `value`."""
    if option.kind is bool:
        widget = QCheckBox(option.about.hint)
        widget.setChecked(value is not False)  # None: on, unless the procedure decides it
    elif option.choices:
        widget = QComboBox()
        for choice in option.choices:
            widget.addItem(option.choice_label(choice), choice)
        widget.setCurrentIndex(max(0, widget.findData(str(value))))
    elif option.kind is int and (option.about.range[1] or SPIN_BOX_MAX) <= SPIN_BOX_MAX:
        widget = QSpinBox()
        low, high = option.about.range
        if option.optional:  # one step below the range shows as "auto" (None: the declared default)
            low -= 1
            widget.setSpecialValueText(AUTO_VALUE)
        widget.setRange(low, SPIN_BOX_MAX if high is None else high)
        widget.setValue(low if value is None else value)
    elif option.kind is float:
        widget = QDoubleSpinBox()
        low, high = option.about.range
        if option.optional and low > 0:  # 0 shows as "none" (None); the declared range starts above it
            low, high = 0.0, OPTIONAL_FLOAT_MAX if high is None else high
            widget.setSpecialValueText(NO_VALUE)
        elif option.optional:  # one step below the range shows as "auto" (None)
            low = low - FLOAT_STEP
            widget.setSpecialValueText(AUTO_VALUE)
        widget.setRange(low, FLOAT_BOX_MAX if high is None else high)
        widget.setDecimals(2)
        widget.setSingleStep(FLOAT_STEP)
        widget.setValue(widget.minimum() if value is None else value)
    elif option.kind is int:
        widget = QLineEdit(str(value))
        widget.setValidator(_RangeValidator(*option.about.range, widget))
    else:  # text: the working size from its list, the models from suggestions or typed
        widget = QComboBox()
        widget.setEditable(option.name != "size")
        widget.addItems(_sizes(value) if option.name == "size" else list(option.about.suggestions))
        widget.setCurrentText(value or (AUTO_SIZE if option.name == "size" else ""))
        if widget.isEditable() and option.optional:  # empty: the default (the Ray cluster: off)
            widget.lineEdit().setPlaceholderText(option.about.default_words)
    widget.setToolTip(textwrap.fill(option.about.help, 90))
    return widget


def _option_value(option: Option, widget: QWidget, previous):
    """What `widget` holds for `option` (`previous` where a text field holds no valid number)."""
    if option.kind is bool:
        return widget.isChecked()
    if option.choices:
        return widget.currentData()
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)) and option.optional and widget.value() < option.about.range[0]:
        return None  # "none", or below the declared range: no value
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        return widget.value()
    if isinstance(widget, QLineEdit):
        valid = widget.validator().validate(widget.text(), 0)[0] == QValidator.State.Acceptable
        return int(widget.text()) if valid else previous
    text = widget.currentText().strip()
    if option.name == "size":
        return None if text == AUTO_SIZE else text
    return text or option.default


def models_problem(models: str) -> str | None:
    """Why `models` cannot be used, from the engine's cheap layout check (no file is hashed or loaded)."""
    from engine.core.errors import ModelError
    from engine.models.sources import MODEL_SOURCE_NAMES, models_folder

    if models in MODEL_SOURCE_NAMES:  # presets: the Model manager checks and fetches the official files
        return None
    try:
        models_folder(models)
    except ModelError as exc:
        return str(exc)
    return None


class SettingsDialog(QDialog):
    """The run options of DIALOG_OPTIONS and the folder for chapter projects (outputs)."""

    def __init__(self, settings: AppSettings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        run = self._run = settings.run
        form = QFormLayout(self)
        self.fields: dict[str, QWidget] = {}
        for name in DIALOG_OPTIONS:
            option = OPTIONS[name]
            self.fields[name] = _option_widget(option, getattr(run, name))
            setattr(self, name, self.fields[name])  # dialog.steps, dialog.procedure, ...
            form.addRow(option.about.label, self.fields[name])
        self.procedure.currentIndexChanged.connect(self._procedure_changed)
        self.models_problem = WrappingLabel()  # why OK refused the models (accept); a long path wraps
        self.models_problem.setWordWrap(True)
        self.models_problem.setStyleSheet("color: #d0343a;")
        self.models_problem.hide()
        self.models.currentTextChanged.connect(self.models_problem.hide)
        form.insertRow(DIALOG_OPTIONS.index("models") + 1, "", self.models_problem)
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

    def accept(self) -> None:
        """OK: a models folder that is missing or not in the models layout is refused here, with why."""
        problem = models_problem(_option_value(OPTIONS["models"], self.models, self._run.models))
        if problem:
            self.models_problem.setText(problem)
            self.models_problem.show()
            self.adjustSize()  # room for the wrapped lines, at the dialog's width
            self.models.setFocus()
            return
        super().accept()

    def _procedure_changed(self) -> None:
        # options the chosen procedure decides (the official one: no keep-ink) are greyed out, not ignored
        fixed = fixed_by(self.procedure.currentData())
        from engine.pipelines.ray_cluster import STUDIO_HINT, ray_installed

        missing = () if ray_installed() else RAY_OPTIONS  # Ray: an optional extra, said how to get
        for name, widget in self.fields.items():
            widget.setEnabled(name not in fixed and name not in missing)
            widget.setToolTip(f"decided by the {self.procedure.currentData()} procedure" if name in fixed
                              else f"Ray is not installed here. {STUDIO_HINT}" if name in missing
                              else textwrap.fill(OPTIONS[name].about.help, 90))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for chapter projects and outputs")
        if folder:
            self.projects_dir.setText(folder)

    def chosen_projects_dir(self) -> str | None:
        return self.projects_dir.text().strip() or None

    def result_settings(self) -> RunSettings:
        """The chosen run options; those the procedure decides are left to it (unset)."""
        values = {name: _option_value(OPTIONS[name], widget, getattr(self._run, name))
                  for name, widget in self.fields.items()}
        fixed = fixed_by(values["procedure"])
        values.update({name: None if OPTIONS[name].optional else value for name, value in fixed.items()})
        return replace(self._run, **values)
