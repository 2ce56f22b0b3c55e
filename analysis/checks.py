"""Parameter checks shared by every estimator, protocol and settings object of the project.

Each check returns the value in its canonical type or raises a ValueError whose message names the parameter, says
what was expected and shows what was received, so a scientist reading it knows what to change.
"""

from __future__ import annotations

import numpy as np


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int, or a ValueError saying it must be an integer >= ``minimum`` (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; received {value!r}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    """``value`` as a positive finite float, or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a positive number; received {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number; received {value!r}")
    return float(value)


def check_same_shape(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str) -> None:
    """A ValueError naming both arrays when their shapes differ."""
    if first.shape != second.shape:
        raise ValueError(
            f"{first_name} and {second_name} must have the same shape; "
            f"received {first_name} of shape {first.shape} and {second_name} of shape {second.shape}"
        )


def check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """``spacing`` (voxel size per array axis, mm) as a tuple of ``ndim`` positive finite floats."""
    try:
        values = np.asarray(spacing, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"spacing must be a sequence of numbers (mm per voxel); could not convert it ({error})"
        ) from None
    if values.ndim != 1 or values.size != ndim:
        raise ValueError(
            f"spacing must give one voxel size per array axis ({ndim} values for {ndim}-D masks); received {spacing!r}"
        )
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"spacing must hold positive, finite voxel sizes in mm; received {spacing!r}")
    return tuple(float(value) for value in values)
