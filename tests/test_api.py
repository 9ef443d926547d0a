"""The public API: every module of ``ens`` declares ``__all__``, each name in it exists and is listed once.

Modules are found with ``pkgutil.walk_packages``, so a new module is checked without editing this
file; ``ens.__main__`` is skipped (importing it runs the command line), and private modules
(``_name.py``) need no ``__all__``.
"""

import importlib
import pkgutil
import subprocess
import sys
from collections import Counter

import pytest

import ens

MODULES = ["ens"] + sorted(m.name for m in pkgutil.walk_packages(ens.__path__, "ens.")
                           if m.name.rsplit(".", 1)[-1] != "__main__")


def test_the_walk_finds_the_subpackages_and_their_modules():
    assert {"ens.pdes", "ens.models", "ens.solvers", "ens.cli", "ens.train", "ens.pdes.helmholtz"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_resolves_and_is_listed_once(name):
    module = importlib.import_module(name)
    if not hasattr(module, "__all__"):
        assert name.rsplit(".", 1)[-1].startswith("_"), f"{name} has no __all__; list its public names there"
        return
    names = module.__all__
    assert all(isinstance(n, str) for n in names), f"{name}.__all__ must hold strings, got {names!r}"
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    assert not duplicates, f"{name}.__all__ lists {duplicates} more than once"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists {missing}, which {name} does not define; define or unlist them"


def test_theory_and_the_data_tools_load_without_the_model_stack():
    # the model stack (neuraloperator) is imported on first use of a network, not by ens itself
    code = ("import sys, ens.theory, ens.data, ens.solvers; from ens.solvers import gradient_descent; "
            "assert 'neuralop' not in sys.modules, 'neuralop imported'; "
            "from ens import ens_solve; assert 'neuralop' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
