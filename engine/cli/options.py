"""The declared run options (engine/core/options.py) as argparse arguments of every command, and back."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from engine.core.options import OPTIONS, Option, OptionValueError, RunSettings
from engine.core.errors import InputError

TAKEN = "run_options"  # namespace attribute: the declared options a command took


def size_text(text: str) -> str:
    """argparse type of --size: the working size as "WxH", checked as the pipeline will use it."""
    from engine.core.geometry import WorkSize

    try:
        return str(WorkSize.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class Default:
    """A command's own default for an option, and what it means (shown in --help)."""

    value: Any
    says: str


def _help(option: Option, says: str) -> str:
    notes = []
    if option.about.range is not None:
        low, high = option.about.range
        notes.append(f"{low} to {high}" if high is not None else f"at least {low}")
    notes.append(f"default: {says}")
    return f"{option.about.help} ({'; '.join(notes)})".replace("%", "%%")


def add_options(parser: argparse.ArgumentParser, names: Sequence[str], *,
                defaults: Mapping[str, Default] | None = None, extra_choices: Mapping[str, Sequence[str]] | None = None,
                helps: Mapping[str, str] | None = None, only: Mapping[str, Sequence[str]] | None = None) -> None:
    """Add the declared options `names` to a command: the same flag, choices, default and help in
    every command. `defaults` gives a command's own default where the option means something
    else there (said in its help), `extra_choices` values beside the declared ones (handled by the
    command before its options become RunSettings), `helps` a command's own wording, `only` the declared
    values a command takes (e.g. the input styles a benchmark runs), in declared order."""
    defaults, extra_choices, helps, only = defaults or {}, extra_choices or {}, helps or {}, only or {}
    for name in names:
        option = OPTIONS[name]
        default = defaults[name].value if name in defaults else option.default
        says = defaults[name].says if name in defaults else (option.about.default_words or str(option.default))
        kwargs: dict[str, Any] = {"dest": name, "default": default,
                                  "help": _help(option, says) if name not in helps else helps[name]}
        if option.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if option.optional else "store_true"
        elif option.choices:
            taken = [c for c in option.choices if c in only[name]] if name in only else list(option.choices)
            kwargs["choices"] = [*taken, *extra_choices.get(name, ())]
        elif name == "size":
            kwargs.update(type=size_text, metavar="WxH")
        else:
            kwargs["type"] = option.kind
        if option.about.metavar:
            kwargs["metavar"] = option.about.metavar
        if option.about.const:  # the value may be left out: --ray alone means --ray local
            kwargs.update(nargs="?", const=option.about.const)
        parser.add_argument(option.flag, **kwargs)
    parser.set_defaults(**{TAKEN: [*(parser.get_default(TAKEN) or []), *names]})


def command_usages(parser: argparse.ArgumentParser, width: int = 100) -> list[str]:
    """The usage line of every command and subcommand of `parser`, as argparse prints it (wrapped
    at `width`): the README's Commands block is generated from this and kept in sync by a test."""
    import os

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        usages: list[str] = []

        def walk(parser: argparse.ArgumentParser) -> None:
            subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if not subparsers:
                usages.append(parser.format_usage().strip().removeprefix("usage: "))
            for action in subparsers:
                for child in action.choices.values():
                    walk(child)

        walk(parser)
        return usages
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def options_from_args(args: argparse.Namespace, **chosen: Any) -> RunSettings:
    """The RunSettings of a command line: the declared options the command took (left unset where a
    command's own default is None: the declared default), `chosen` over them (a command's own
    resolution, e.g. a default that depends on --models). A value outside the declared ones is
    one line naming the flag."""
    taken = getattr(args, TAKEN, [])
    values = {name: getattr(args, name) for name in taken if getattr(args, name) is not None or OPTIONS[name].optional}
    try:
        return RunSettings(**{**values, **chosen})
    except OptionValueError as exc:
        raise InputError(f"{exc.option.flag} {exc.problem}") from None
