"""2D CNNs on flat cortical maps (seed 001: Cerebral Cortex 2022, area-preserving geometry mapping).

Modules (import them directly; ``import learn.surface`` itself does not import torch):

- :mod:`learn.surface.synthetic`: SYNTHETIC cortical cohorts on the real template meshes with planted effects,
  written in FreeSurfer / HCP layouts or rasterized directly in template mode.
- :mod:`learn.surface.dataset`: images from ``surfmap batch`` outputs (or arrays) plus a cohort table; fold-wise
  normalisation (:class:`~learn.surface.dataset.Normalizer`).
- :mod:`learn.surface.models`: torchvision ResNet / DenseNet with ImageNet weights loaded offline, a tiny CNN.
- :mod:`learn.surface.train`: the seed's schedule (mix-up then plain phase), cross-validation, predictions.
- :mod:`learn.surface.cli`: ``surfmap-learn surface run --config FILE``.
"""
