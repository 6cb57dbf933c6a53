"""Entry point: `python main.py` opens the GUI; `python main.py COMMAND ...` runs the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CLI_COMMANDS = {"colorize", "retrieve", "models", "train", "eval", "bench", "demo"}


def main(argv: list[str]) -> int:
    if argv and (argv[0] in CLI_COMMANDS or argv[0] in ("-h", "--help")):
        from engine.cli import main as cli_main

        return cli_main(argv)
    print(
        "The desktop window is not built yet (issue 7). Use the command line meanwhile:\n"
        "  python main.py --help",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
