"""Settings of a surface experiment that need no torch: the model, the training schedule, the cross-validation.

Re-exported by :mod:`learn.surface.train`; kept apart so that ``surfmap-learn surface --help`` and config
parsing do not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from learn import ConfigError

__all__ = ["CVConfig", "ModelConfig", "ScheduleConfig"]


@dataclass
class ScheduleConfig:
    """Seed 001's training schedule (the defaults) with every number exposed."""

    epochs: int = 125
    mixup_epochs: int = 75
    lr: float = 0.01
    lr_step_epochs: int = 25
    lr_gamma: float = 0.1
    final_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    mixup_alpha: float = 1.0

    def __post_init__(self):
        if self.epochs < 1 or not 0 <= self.mixup_epochs <= self.epochs:
            raise ConfigError(
                f"schedule: expected epochs >= 1 and 0 <= mixup_epochs <= epochs; found epochs={self.epochs}, "
                f"mixup_epochs={self.mixup_epochs}"
            )
        if self.lr <= 0 or self.final_lr <= 0 or self.lr_step_epochs < 1 or not 0 < self.lr_gamma <= 1:
            raise ConfigError(
                "schedule: expected lr > 0, final_lr > 0, lr_step_epochs >= 1 and 0 < lr_gamma <= 1; found "
                f"lr={self.lr}, final_lr={self.final_lr}, lr_step_epochs={self.lr_step_epochs}, "
                f"lr_gamma={self.lr_gamma}"
            )
        if self.batch_size < 2:
            raise ConfigError(f"schedule: 'batch_size' should be at least 2; {self.batch_size} was provided")


@dataclass
class ModelConfig:
    """Which network: ``name`` in resnet18 / resnet34 / resnet50 / densenet121 / tiny; ``weights`` "imagenet",
    a file path, or None / "none" / "scratch" (from scratch; TOML has no null)."""

    name: str = "resnet50"
    weights: str | None = "imagenet"
    tiny_width: int = 16
    tiny_depth: int = 3

    def __post_init__(self):
        if isinstance(self.weights, str) and self.weights.strip().lower() in ("none", "scratch", ""):
            self.weights = None


@dataclass
class CVConfig:
    """Cross-validation: ``scheme`` "kfold" (stratified, grouped by subject) or "loso" (leave one site out).

    ``inner_splits >= 2`` also runs, inside every outer training set, an inner grouped K-fold whose
    out-of-fold predictions (rows with ``role = "inner"``) are the leakage-free training features of a stacker
    (:mod:`learn.surface.stacking`): they come from models that never saw the outer test fold.
    """

    scheme: str = "kfold"
    n_splits: int = 10
    seed: int = 0
    per_channel: bool = True
    normalization: str = "channel"
    bootstrap_rounds: int = 1000
    shuffle_labels: bool = False
    inner_splits: int = 0

    def __post_init__(self):
        if self.scheme not in ("kfold", "loso"):
            raise ConfigError(f"cv 'scheme' should be 'kfold' or 'loso'; {self.scheme!r} was provided")
        if self.normalization not in ("channel", "pixel", "none"):
            raise ConfigError(
                f"cv 'normalization' should be 'channel', 'pixel' or 'none'; {self.normalization!r} was provided"
            )
        if self.inner_splits == 1 or self.inner_splits < 0:
            raise ConfigError(f"cv 'inner_splits' should be 0 (off) or >= 2; {self.inner_splits} was provided")
