"""Entry point: `python main.py` opens the GUI; `python main.py COMMAND ...` runs the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CLI_COMMANDS = {"colorize", "retrieve", "models", "bench", "demo", "eval", "train", "series", "check-consistency", "--version"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in CLI_COMMANDS:
        from engine.cli.main import main as cli_main

        return cli_main(argv)
    if argv and argv[0] == "--help-cli":
        from engine.cli.main import main as cli_main

        return cli_main(["--help"])
    from app.launcher import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
