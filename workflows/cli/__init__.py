"""The `ohlcv` command line (Typer): `workflows.cli.main` builds the app and handles errors."""
