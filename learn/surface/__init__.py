"""2D CNNs on flat cortical maps (seed 001: Cerebral Cortex 2022, area-preserving geometry mapping).

Modules (import them directly; ``import learn.surface`` itself does not import torch):

- :mod:`learn.surface.synthetic`: SYNTHETIC cortical cohorts on the real template meshes with planted effects,
  written in FreeSurfer / HCP layouts or rasterized directly in template mode.
- :mod:`learn.surface.dataset`: images from ``surfmap batch`` outputs (or arrays) plus a cohort table; fold-wise
  normalisation (:class:`~learn.surface.dataset.Normalizer`).
- :mod:`learn.surface.models`: torchvision ResNet / DenseNet with ImageNet weights loaded offline, a tiny CNN.
- :mod:`learn.surface.train`: the seed's schedule (mix-up then plain phase), cross-validation, predictions.
- :mod:`learn.surface.transfer`: two-stage transfer ImageNet -> sex (HCP) -> autism (ABIDE) and its ablations.
- :mod:`learn.surface.stacking`: XGBoost stacking on out-of-fold (nested) predictions; averaging ablation.
- :mod:`learn.surface.occlusion`: occlusion maps, back-projected to the cortex and written as GIFTI.
- :mod:`learn.surface.baselines`: PCA + SVM, voxelised 3D CNN, 2D slices; Table-2-like results.
- :mod:`learn.surface.cli`: ``surfmap-learn surface run --config FILE`` and ``synth``.
"""

import os as _os


def _numba_workqueue() -> None:
    """Numba's OpenMP thread pool keeps its idle threads busy-waiting; in a process that flattens (surfmap's Numba
    kernels) and then trains with torch, they starve torch (measured on 2 cores: tiny-CNN steps 30x slower, for
    the rest of the process). The ``workqueue`` layer has no such threads. Applied only when the user chose no
    layer (``NUMBA_THREADING_LAYER``) and no parallel Numba code has run yet in this process."""
    if _os.environ.get("NUMBA_THREADING_LAYER"):
        return
    import numba

    if numba.config.THREADING_LAYER == "default":
        try:
            numba.threading_layer()  # raises while no layer is initialised
        except ValueError:
            numba.config.THREADING_LAYER = "workqueue"


_numba_workqueue()
