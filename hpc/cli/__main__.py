"""`python -m hpc.cli`: the same as the `microloop` command."""

from hpc.cli.app import main

main()
