"""Run the qres CLI with ``python -m qres``."""

from qres.cli import main

main()
