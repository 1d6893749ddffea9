"""The command line: `llmsim COMMAND`, one module per command (sim.cli.main builds the
parser)."""
