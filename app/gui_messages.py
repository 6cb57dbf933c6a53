"""Engine messages in the GUI's words: the command-line hints they end with become the menus and
dialogs that do the same (the engine's text, which the CLI prints, is never changed)."""

from __future__ import annotations

import re

from engine.core.options import OPTIONS

from .settings import DIALOG_OPTIONS

SETTINGS = "Edit ▸ Settings…"
MODEL_MANAGER = "Models ▸ Model manager…"

# Whole phrases first: commands the GUI has a place for, and flags that are no setting.
PHRASES = (
    (re.compile(r"`colorflow models download`"), MODEL_MANAGER),
    (re.compile(r"run again with --resume"), "Run ▸ Colorize all pages again (colored pages are kept)"),
    (re.compile(r"run the same command again"), "colorize again"),
    (re.compile(r"\(--include-uncolored\)"), "(File ▸ Export… asks for them)"),
    (re.compile(r"run without --ray"), f"clear Ray cluster in {SETTINGS} to color on this computer"),
)
COMMAND = re.compile(r"(`colorflow [^`]*`)")  # a command the GUI has no place for: for a terminal
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)(?:( +)([\w.]+))?")
FLAGS = {option.flag: option for option in OPTIONS.values()}


def _option_words(match: re.Match) -> tuple[str, bool] | None:
    """The Settings label (and value) a flag stands for, and whether the value was part of it."""
    option = FLAGS.get(match.group(1))
    if option is None:
        return None
    value = match.group(3)
    usable = value is not None and (value in option.choices or value in option.about.suggestions
                                    or re.fullmatch(r"\d+(x\d+)?", value) is not None)
    return (f"{option.about.label} {value}" if usable else option.about.label), usable


def _rewrite_flags(text: str) -> str:
    """Each setting's flag as its Settings label; the last one says where Settings are."""
    matches = [(m, _option_words(m)) for m in FLAG.finditer(text)]
    known = [(m, words) for m, words in matches if words is not None]
    out, start = [], 0
    for position, (match, (words, took_value)) in enumerate(known):
        end = match.end() if took_value else match.end(1)
        last = position == len(known) - 1
        where = f" in {SETTINGS}" if last and FLAGS[match.group(1)].name in DIALOG_OPTIONS else ""
        out += [text[start:match.start()], words + where]
        start = end
    return "".join(out) + text[start:]


def gui_text(message: str) -> str:
    """`message` (from the engine) as the GUI says it: menus and dialogs instead of flags and commands."""
    for pattern, replacement in PHRASES:
        message = pattern.sub(replacement, message)
    parts = COMMAND.split(message)  # odd parts: commands, kept whole, said to be for a terminal
    return "".join(f"{part} (in a terminal)" if index % 2 else _rewrite_flags(part)
                   for index, part in enumerate(parts))
