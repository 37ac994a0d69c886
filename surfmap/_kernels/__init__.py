"""Numba kernels: private, arrays and scalars only, module-level dispatchers with ``cache=True``.

Importing this package picks Numba's ``workqueue`` threading layer unless the user chose one
(``NUMBA_THREADING_LAYER``) or parallel Numba code already ran. Numba's default OpenMP pool keeps
idle threads spinning; in a process that flattens and then trains with torch they starve torch
(measured on 2 cores: tiny-CNN training steps 30x slower for the rest of the process). Our
parallel loops are simple ``prange`` loops with disjoint outputs, which ``workqueue`` runs as fast.
"""

import os as _os


def _prefer_workqueue() -> None:
    if _os.environ.get("NUMBA_THREADING_LAYER"):
        return
    import numba

    if numba.config.THREADING_LAYER == "default":
        try:
            numba.threading_layer()  # raises while no layer is initialised
        except ValueError:
            numba.config.THREADING_LAYER = "workqueue"


_prefer_workqueue()
