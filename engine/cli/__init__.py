"""The command line: one module per command group (`colorflow COMMAND --help`)."""
