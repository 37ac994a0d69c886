"""Deep learning on brain maps: shared training, cross-validation, metrics and checkpoints.

Sub-packages build on the core modules here:

- :mod:`learn.volumetric`: the 3D Inception-ResNet-V2 path of BrainImageNet (J Big Data 2022,
  doi:10.1186/s40537-022-00650-y).
- :mod:`learn.surface`: 2D CNNs on flat maps ("Deep transfer learning for cerebral cortex using area-preserving
  geometry mapping", Cerebral Cortex 32(14):2972-2984, 2022).

Core modules (import them directly; ``import learn`` itself does not import torch):

- :mod:`learn.utils`: seeding, device choice, ``torch.distributed`` helpers.
- :mod:`learn.metrics`: accuracy, sensitivity, specificity, ROC AUC, subsample / bootstrap intervals.
- :mod:`learn.cv`: grouped splitters (leave-groups-out, stratified group K-fold), validation split, leak check.
- :mod:`learn.training`: ``train_one_epoch``, ``evaluate``, ``fit``, ``keras_decay_scheduler``.
- :mod:`learn.checkpoint`: atomic ``save_checkpoint`` / ``load_checkpoint``.
- :mod:`learn.config`: TOML/JSON configs into dataclasses, unknown keys fail loudly.
- :mod:`learn.uncertainty`: repeated cross-validation, corrected resampled t-intervals, permutation tests.
"""

from __future__ import annotations

from surfmap.exceptions import ParameterError, SurfmapError

__all__ = ["ConfigError", "DataError", "LearnError", "MetricUndefinedError", "SplitError"]


class LearnError(SurfmapError):
    """Root of the errors raised by :mod:`learn` (also a :class:`surfmap.exceptions.SurfmapError`)."""


class ConfigError(LearnError, ParameterError):
    """A configuration file or option is malformed, unknown or out of range (a
    :class:`surfmap.exceptions.ParameterError`, as every wrong argument in surfmap and learn)."""


class DataError(LearnError, ValueError):
    """A cohort table or an image does not match what the pipeline expects."""


class SplitError(LearnError, ValueError):
    """A train/test split leaks a subject, site or dataset, or cannot be built."""


class MetricUndefinedError(LearnError, ValueError):
    """A metric is undefined for the given labels or scores (e.g. ROC AUC with one class)."""
