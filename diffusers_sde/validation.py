"""Argument checks shared by every public entry point: each error names the argument, the value and what is allowed.

Numbers may be Python numbers, numpy scalars or 0-d tensors (``np.float32(0.5)``, ``torch.tensor(2)``); the checks
return them as plain Python numbers, so the code behind the boundary never sees the difference.
"""

import math
import numbers

import torch


def as_number(value):
    """A 0-d tensor becomes its Python number; anything else is returned as it is."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        return value.item()
    return value


def check_number(name, value, minimum=None, maximum=None, strict_minimum=True):
    """A finite real number in the given range (``minimum`` exclusive unless ``strict_minimum=False``); returns a float."""
    value = as_number(value)
    valid = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if valid and minimum is not None:
        valid = value > minimum if strict_minimum else value >= minimum
    if valid and maximum is not None:
        valid = value <= maximum
    if not valid:
        raise ValueError(f"{name} must be a finite number{_range(minimum, maximum, strict_minimum)}, got {value!r}.")
    return float(value)


def check_positive(name, value, maximum=None):
    """A finite number > 0 (and <= ``maximum``); returns a float."""
    return check_number(name, value, minimum=0, maximum=maximum)


def check_integer(name, value, minimum=None):
    """An integer (not a bool) >= ``minimum``; returns an int."""
    value = as_number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}.")
    return int(value)


def check_choice(name, value, allowed):
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}.")
    return value


def _range(minimum, maximum, strict_minimum):
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict_minimum else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " " + " and ".join(parts) if parts else ""
