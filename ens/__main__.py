"""``python -m ens``: the command line of :mod:`ens.cli`."""

from .cli import main

raise SystemExit(main())
