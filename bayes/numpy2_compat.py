"""Re-add the numpy names that numpy 2 removed and dragonfly-opt 0.1.7 still uses.

dragonfly-opt (last released 2022) calls ``np.math``, ``np.asscalar``, ``np.float``, ``np.int``,
``np.bool``, ``np.object`` and ``np.NaN``. Each alias below is what numpy itself documented as the
replacement when it removed the name. Only missing names are added, so this is a no-op on numpy 1
and never shadows a name numpy still defines. Call :func:`install` before importing dragonfly.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def _asscalar(array: np.ndarray) -> object:
    """numpy's documented replacement for the removed ``np.asscalar``."""
    return np.asarray(array).item()


REMOVED_ALIASES: dict[str, object] = {
    "math": math,
    "asscalar": _asscalar,
    "float": float,
    "int": int,
    "bool": bool,
    "object": object,
    "NaN": np.nan,
}


def install() -> list[str]:
    """Add each missing alias to the numpy module; return the names added."""
    added = []
    for name, value in REMOVED_ALIASES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            present = name in np.__dict__
        if not present:
            setattr(np, name, value)
            added.append(name)
    return added
