"""Argument checks shared by the whole package.

Each check returns the value (as a plain Python ``int`` or ``float``) or raises ``ValueError`` with
one line that names the argument, says what was expected and shows what was given. A ``bool`` is
never accepted as a number (``True`` is an ``int`` to Python, never a sample count to us); numpy
scalars are.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_number", "check_real", "check_choice", "check_choices", "check_optional_int"]


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _an_int(minimum: int) -> str:
    return {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``; else ``ValueError``."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)) or value < minimum:
        raise ValueError(f"expected {name} to be {_an_int(minimum)}, got {value!r}")
    return int(value)


def check_number(value, name: str, *, positive: bool = True, allow_inf: bool = False) -> float:
    """A real number (not a bool, not NaN), ``> 0`` (``positive``) or ``>= 0``, finite unless
    ``allow_inf``; else ``ValueError``."""
    ok = _is_real(value) and not math.isnan(value)
    ok = ok and (allow_inf or math.isfinite(value)) and (value > 0 if positive else value >= 0)
    if not ok:
        what = "a positive" if positive else "a non-negative"
        raise ValueError(f"expected {name} to be {what}{'' if allow_inf else ' finite'} number, got {value!r}")
    return float(value)


def check_real(value, name: str) -> float:
    """A finite real number of either sign (not a bool, not NaN); else ``ValueError``."""
    if not (_is_real(value) and math.isfinite(value)):
        raise ValueError(f"expected {name} to be a finite number, got {value!r}")
    return float(value)


def check_choice(kind: str, value, choices) -> None:
    """Raise ``ValueError`` naming the valid choices if ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; expected one of {list(choices)}")


def check_choices(name: str, values, choices, kind: str = "item") -> list | None:
    """``None``, or ``values`` as a list (duplicates dropped, order kept) if it is a list or tuple
    whose every item is one of ``choices``; a string -- for example the text ``'["poisson"]'``
    that ``papermill -p`` passes -- is refused with the expected form."""
    if values is None:
        return None
    example = list(choices)[:2]
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        got = f"the string {values!r}" if isinstance(values, str) else f"{type(values).__name__} {values!r}"
        raise ValueError(f"expected {name} to be None or a list such as {example} (papermill: -y '{name}: "
                         f"[{', '.join(example)}]'), got {got}")
    if not values:
        raise ValueError(f"expected {name} to be None or a non-empty list such as {example}, got {values!r}")
    for v in values:
        check_choice(f"{kind} in {name}", v, choices)
    return list(dict.fromkeys(values))


def check_optional_int(value, name: str, minimum: int = 1) -> int | None:
    """``None``, or ``value`` checked by :func:`check_int` (so ``0`` is refused where ``minimum``
    is 1: it never means "unset")."""
    if value is None:
        return None
    try:
        return check_int(value, name, minimum)
    except ValueError:
        raise ValueError(f"expected {name} to be None or {_an_int(minimum)}, got {value!r}") from None
