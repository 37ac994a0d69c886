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
- :mod:`learn.surface.config`: every setting as dataclasses (no torch import), ``describe`` for ``--help``.
- :mod:`learn.surface.experiment`: the whole seed-001 experiment from one config, resumable at every unit;
  ``predict_run`` scores new subjects with a run's fold ensemble.
- :mod:`learn.surface.report`: Tables 1-2 with bootstrap intervals, ROC curves, confusion matrices, occlusion
  figures, ``report.md``.
- :mod:`learn.surface.cli`: ``surfmap-learn surface run --config FILE``, ``predict`` and ``synth``.
"""

# Numba's threading layer (workqueue, so that flattening and torch training can share one process) is chosen
# by surfmap._kernels, which every surfmap kernel imports before it runs: nothing to import here (importing Numba
# would cost ``surfmap-learn surface --help`` a second).
