"""The command layer: shared options and error handling (options.py), one module per command.
Each command is a thin layer over the library (llmsim.api / llmsim.simulate)."""
