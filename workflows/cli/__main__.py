"""`python -m workflows.cli ...` runs the `ohlcv` command."""

from workflows.cli.main import main

main()
