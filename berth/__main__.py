"""`python -m berth` is the `berth` command."""

from berth.cli.main import main

main()
