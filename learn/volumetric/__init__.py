"""Volumetric path of seed 000 (BrainImageNet): 3D Inception-ResNet-V2 on grey-matter density + volume maps.

- :mod:`learn.volumetric.model`: the sex / age base network and the AD classifier built from its stem.
- :mod:`learn.volumetric.data`: cohort tables, NIfTI GMD/GMV pairs, mask, crop, cached datasets.
- :mod:`learn.volumetric.synthetic`: a SYNTHETIC cohort with planted effects (tests, demos; no download).
- :mod:`learn.volumetric.config` / :mod:`learn.volumetric.train`: ``surfmap-learn volumetric train --config FILE``.
"""
