"""The ``tidings`` command line (typer + rich)."""
