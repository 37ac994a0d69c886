"""Volumetric path of seed 000 (BrainImageNet): 3D Inception-ResNet-V2 on grey-matter density + volume maps.

- :mod:`learn.volumetric.model`: the sex / age base network and the AD classifier built from its stem.
- :mod:`learn.volumetric.data`: cohort tables, NIfTI GMD/GMV pairs, mask, crop, cached datasets.
- :mod:`learn.volumetric.synthetic`: a SYNTHETIC cohort with planted effects (tests, demos; no download).
- :mod:`learn.volumetric.config` / :mod:`learn.volumetric.train`: ``surfmap-learn volumetric train --config FILE``.
- :mod:`learn.volumetric.qc`, :mod:`~learn.volumetric.analysis`, :mod:`~learn.volumetric.occlusion`,
  :mod:`~learn.volumetric.gradcam`: quality control, clinical analyses and maps (``surfmap-learn volumetric``).

The workflow from a cohort table to every figure is in ``learn/volumetric/README.md``.
"""
