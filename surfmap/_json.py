"""JSON encoding of the numpy values that results carry (``json.dumps(obj, default=json_default)``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def json_default(x):
    """Arrays become lists, numpy scalars Python numbers, paths strings; anything else is a TypeError."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
