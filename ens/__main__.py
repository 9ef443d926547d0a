"""``python -m ens``: the command line of :mod:`ens.cli`."""

from .cli import run

run()
