"""A child-process CLI run that reports its exit code and whether torch was imported (fast errors come before torch)."""

PROBE = (
    "import json, sys\n"
    "from engine.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))\n"
)
