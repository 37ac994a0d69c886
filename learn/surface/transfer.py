"""Two-stage transfer (seed 001): ImageNet -> source task (sex, HCP) -> target task (autism, ABIDE).

Per metric and hemisphere (channel), a network is fine-tuned on the whole source cohort, then each target fold
starts from those weights (the final linear layer re-initialised, as the seed replaces it for each task) and is
fine-tuned on the target training fold. The seed's ablations are strategies of :func:`two_stage_cross_validate`:

=================  ===========================================================
``"two_stage"``    ImageNet (``model_cfg.weights``) -> source -> target
``"imagenet"``     ImageNet -> target directly ("transfer" in the seed's tables)
``"scratch"``      random initialisation -> target
``"source_only"``  random initialisation -> source -> target (no ImageNet)
=================  ===========================================================

Source and target are different cohorts (no subject in both); the source model never sees a target subject, so
the target cross-validation stays clean.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from learn import ConfigError, DataError
from learn.checkpoint import save_checkpoint

from .dataset import Normalizer, SurfaceImageDataset
from .models import model_from_state  # noqa: F401  (re-exported: it lives with the models since train uses it too)
from .train import CVConfig, ModelConfig, ScheduleConfig, cross_validate, train_model

__all__ = ["STRATEGIES", "model_from_state", "train_source_models", "two_stage_cross_validate"]

log = logging.getLogger(__name__)

STRATEGIES = ("two_stage", "imagenet", "scratch", "source_only")


def train_source_models(source: SurfaceImageDataset, *, model_cfg: ModelConfig, schedule: ScheduleConfig,
                        channels=None, normalization: str = "channel", out_dir=None, device="auto",
                        seed: int = 0, amp: bool = False, progress: bool = True) -> dict:
    """Fine-tune one network per channel on the whole source cohort (stage one).

    Returns
    -------
    dict of channel -> state_dict (CPU tensors)
        Also written to ``out_dir/<channel>/model.pt`` with the source normaliser, when ``out_dir`` is given.
    """
    channels = list(source.channels if channels is None else channels)
    states = {}
    for i, ch in enumerate(channels):
        ds = source.select(ch)
        idx = np.arange(len(ds))
        norm = Normalizer(normalization).fit(ds.images, idx)
        model, _ = train_model(ds.fold(idx, norm), model_cfg=model_cfg, schedule=schedule, in_channels=1,
                               device=device, seed=seed + 101 * i, amp=amp, progress=progress)
        states[ch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if out_dir is not None:
            d = Path(out_dir) / ch
            save_checkpoint(d / "model.pt", model=model, epoch=schedule.epochs - 1,
                            args={"model": dataclasses.asdict(model_cfg), "schedule": dataclasses.asdict(schedule)},
                            channel=ch, stage="source")
            np.savez(d / "normalizer.npz", **{k: np.asarray(v) for k, v in norm.state_dict().items()})
        log.info("source model for %s trained on %d subjects", ch, len(ds))
    return states


def _check_same_geometry(source: SurfaceImageDataset, target: SurfaceImageDataset) -> None:
    """Source and target images from one map (``geometry`` of ``surfmap batch``), else DataError naming the fix."""
    from .dataset import GEOMETRY_FIX

    gs, gt = getattr(source, "geometry", None) or {}, getattr(target, "geometry", None) or {}
    for hemi in sorted(set(gs) & set(gt)):
        if gs[hemi] != gt[hemi] or gs[hemi] == "native":
            what = ("per-subject (native) maps" if "native" in (gs[hemi], gt[hemi])
                    else f"different maps ({gs[hemi][:24]}... vs {gt[hemi][:24]}...)")
            raise DataError(f"source and target {hemi} images come from {what}: a pixel is not the same place of "
                            "the cortex in both cohorts, so the source network's features do not transfer. Fix: "
                            + GEOMETRY_FIX)


def two_stage_cross_validate(source: SurfaceImageDataset | None, target: SurfaceImageDataset, *,
                             strategy: str = "two_stage", model_cfg: ModelConfig,
                             source_schedule: ScheduleConfig, target_schedule: ScheduleConfig, cv: CVConfig,
                             channels=None, out_dir=None, device="auto", seed: int = 0, amp: bool = False,
                             progress: bool = True, source_states: dict | None = None) -> dict:
    """Cross-validate the target task after an optional source stage (see the module's strategy table).

    Parameters
    ----------
    source : SurfaceImageDataset or None
        The source cohort (needed by "two_stage" and "source_only" unless ``source_states`` is given).
    target : SurfaceImageDataset
    channels : sequence of str, optional
        Channels present in both cohorts (default: the target's).
    source_states : dict, optional
        Stage-one weights already trained (e.g. shared by several runs).

    Returns
    -------
    dict
        :func:`learn.surface.train.cross_validate`'s result plus ``source_states``.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"'strategy' should be one of {list(STRATEGIES)}; {strategy!r} was provided")
    channels = list(target.channels if channels is None else channels)
    out = Path(out_dir) if out_dir is not None else None
    states = None
    if strategy in ("two_stage", "source_only"):
        src_cfg = model_cfg if strategy == "two_stage" else dataclasses.replace(model_cfg, weights=None)
        if source_states is None:
            if source is None:
                raise ConfigError(f"strategy {strategy!r} needs a source cohort or 'source_states'")
            missing = [c for c in channels if c not in source.channels]
            if missing:
                raise DataError(f"channels {missing} are in the target but not in the source cohort "
                                f"(source channels: {source.channels})")
            _check_same_geometry(source, target)
            shared = set(map(str, source.subjects)) & set(map(str, target.subjects))
            if shared:
                raise DataError(f"{len(shared)} subject(s) are in both the source and the target cohort: "
                                f"{sorted(shared)[:5]}; the source stage would see target test subjects")
            source_states = train_source_models(
                source, model_cfg=src_cfg, schedule=source_schedule, channels=channels,
                normalization=cv.normalization, out_dir=out / "source" if out is not None else None,
                device=device, seed=seed, amp=amp, progress=progress,
            )
        states = source_states
        target_cfg = dataclasses.replace(model_cfg, weights=None)
    elif strategy == "scratch":
        target_cfg = dataclasses.replace(model_cfg, weights=None)
    else:
        target_cfg = model_cfg
    result = cross_validate(
        target, model_cfg=target_cfg, schedule=target_schedule, cv=cv, out_dir=out / strategy if out else None,
        device=device, seed=seed, amp=amp, progress=progress, channels=channels, init_states=states,
    )
    result["source_states"] = states
    return result
