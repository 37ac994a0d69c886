"""``surfmap-learn surface``: cross-validated CNN experiments on flat-map images from a config file.

Usage::

    surfmap-learn surface run --config experiment.toml [--out DIR] [--set section.key=value ...] [--debug]
    surfmap-learn surface synth --cohort hcp_like|abide_like --template fsaverage5|fslr32k
                                --layout freesurfer|hcp --n-subjects N -o DIR

``run`` reads a TOML or JSON config (sections ``[data]``, ``[synthetic]``, ``[model]``, ``[schedule]``, ``[cv]`` and
top-level keys; unknown keys fail), loads the images (``surfmap batch`` manifest + cohort table, or a SYNTHETIC
cohort rasterized in template mode), cross-validates, and writes into the output folder:

- ``config.resolved.json``: every setting, defaults included;
- ``predictions.csv``: one row per test subject, fold and channel (subject, site, label, fold, channel, score);
- ``results.json`` / ``results.csv``: accuracy, sensitivity, specificity, AUC per fold and pooled, bootstrap CIs;
- ``folds/<channel>/foldNN/``: ``model.pt`` (final weights), ``normalizer.npz``, the fold's predictions, and
  ``last.pt`` while the fold is running (a rerun resumes from it; finished folds are skipped).

``synth`` writes a SYNTHETIC cohort in a real folder layout (plus ``cohort.csv`` and ground-truth effect maps) so
that ``surfmap batch`` and this command can be tried end to end without real data.

Example config (the seed's schedule is the default; a CPU-sized synthetic run)::

    out_dir = "runs/synthetic-sex"
    device = "cpu"
    [data]
    source = "synthetic"
    [synthetic]
    cohort = "hcp_like"
    template = "fsaverage5"
    n_subjects = 120
    image_size = 64
    [model]
    name = "resnet18"
    weights = "imagenet"      # from the torch hub cache; never downloaded
    [schedule]
    epochs = 20
    mixup_epochs = 12
    lr_step_epochs = 4
    [cv]
    scheme = "kfold"          # or "loso"
    n_splits = 5
    repeats = 1               # R cross-validations with other folds and seeds: mean, SD, corrected interval
    permutations = 0          # P within-site label permutations: p-value against chance, null figure
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from learn import ConfigError, LearnError

from .train import CVConfig, ModelConfig, ScheduleConfig

__all__ = ["DataConfig", "RunConfig", "SyntheticConfig", "load_dataset", "main", "run_experiment"]

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Where the images come from: ``source`` "manifest" (``surfmap batch`` output + cohort table) or
    "synthetic" (the ``[synthetic]`` section)."""

    source: str = "manifest"
    manifest: str | None = None
    table: str | None = None
    metrics: list[str] | None = None
    hemis: list[str] = field(default_factory=lambda: ["left", "right"])
    label_column: str = "label"
    subject_column: str = "subject"
    site_column: str = "site"
    on_missing: str = "error"


@dataclass
class SyntheticConfig:
    """A SYNTHETIC cohort rasterized in template mode (see :mod:`learn.surface.synthetic`)."""

    cohort: str = "hcp_like"
    template: str = "fsaverage5"
    n_subjects: int = 200
    n_sites: int = 10
    subjects_per_site: list[int] = field(default_factory=lambda: [20, 60])
    effect_size: float = 0.8
    n_regions: int = 3
    radius_mm: float = 20.0
    fwhm_mm: float = 20.0
    hemis: list[str] = field(default_factory=lambda: ["left", "right"])
    metrics: list[str] | None = None
    image_size: int = 224
    map_method: str = "area"
    grid_size: int = 32
    seed: int = 0


@dataclass
class RunConfig:
    """A whole experiment: top-level keys plus the sections below."""

    out_dir: str = "runs/surface"
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    num_workers: int = 0
    progress: bool = True
    resume: bool = True
    keep_models: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cv: CVConfig = field(default_factory=CVConfig)


def synthetic_cohort(cfg: SyntheticConfig):
    """The SYNTHETIC cohort a ``[synthetic]`` section describes."""
    from . import synthetic as S

    common = dict(template=cfg.template, hemis=tuple(cfg.hemis),
                  metrics=tuple(cfg.metrics) if cfg.metrics else None, effect_size=cfg.effect_size,
                  n_regions=cfg.n_regions, radius_mm=cfg.radius_mm, seed=cfg.seed, grid_size=cfg.grid_size)
    if cfg.cohort == "hcp_like":
        return S.hcp_like_cohort(cfg.n_subjects, fwhm_mm=cfg.fwhm_mm, **common)
    if cfg.cohort == "abide_like":
        lo, hi = (list(cfg.subjects_per_site) + list(cfg.subjects_per_site))[:2]
        return S.abide_like_cohort(cfg.n_sites, (int(lo), int(hi)), **common)
    raise ConfigError(f"synthetic 'cohort' should be 'hcp_like' or 'abide_like'; {cfg.cohort!r} was provided")


def load_dataset(cfg):
    """The :class:`~learn.surface.dataset.SurfaceImageDataset` of a run config."""
    from .dataset import SurfaceImageDataset

    d = cfg.data
    if d.source == "synthetic":
        from . import synthetic as S

        cohort = synthetic_cohort(cfg.synthetic)
        log.info("SYNTHETIC data: %s (%d subjects)", cohort.spec.name, cohort.n_subjects)
        R = S.template_rasterizers(cohort, size=cfg.synthetic.image_size, method=cfg.synthetic.map_method)
        images, channels = cohort.images(R)
        return SurfaceImageDataset.from_arrays(images, cohort.table, channels)
    if d.source == "manifest":
        if not d.manifest or not d.table:
            raise ConfigError("[data] source = 'manifest' needs 'manifest' (manifest.tsv of surfmap batch) and "
                              "'table' (cohort CSV with subject, label, site)")
        return SurfaceImageDataset.from_manifest(
            d.manifest, d.table, metrics=d.metrics, hemis=tuple(d.hemis), label_column=d.label_column,
            subject_column=d.subject_column, site_column=d.site_column, on_missing=d.on_missing,
        )
    raise ConfigError(f"[data] 'source' should be 'manifest' or 'synthetic'; {d.source!r} was provided")


def run_experiment(cfg) -> dict:
    """Run a cross-validated experiment from a resolved config; returns :func:`cross_validate`'s dict."""
    from learn.config import save_resolved
    from learn.utils import init_distributed, is_main_process

    from .train import cross_validate

    init_distributed()
    out = Path(cfg.out_dir)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out / "config.resolved.json")
    dataset = load_dataset(cfg)
    from .uncertainty import add_uncertainty, announce_cost

    announce_cost(dataset, cfg.cv)
    result = cross_validate(
        dataset, model_cfg=cfg.model, schedule=cfg.schedule, cv=cfg.cv, out_dir=out, device=cfg.device,
        seed=cfg.seed, amp=cfg.amp, progress=cfg.progress, num_workers=cfg.num_workers, resume=cfg.resume,
        keep_models=cfg.keep_models, args=cfg,
    )
    return add_uncertainty(dataset, cfg, result, out)  # repeats, permutations, corrected intervals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surfmap-learn surface", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="cross-validate a CNN from a config file")
    r.add_argument("--config", required=True, help="TOML or JSON experiment config")
    r.add_argument("--out", help="output folder (overrides out_dir)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set schedule.epochs=10 (repeatable)")
    r.add_argument("--debug", action="store_true", help="show the traceback on error")
    s = sub.add_parser("synth", help="write a SYNTHETIC cohort in a FreeSurfer or HCP folder layout")
    s.add_argument("--cohort", choices=["hcp_like", "abide_like"], default="hcp_like")
    s.add_argument("--template", choices=["fsaverage5", "fslr32k"], default="fsaverage5")
    s.add_argument("--layout", choices=["freesurfer", "hcp"], default="freesurfer")
    s.add_argument("--n-subjects", type=int, default=20, help="subjects (hcp_like) or sites x 2..4 (abide_like)")
    s.add_argument("--effect-size", type=float, default=0.8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("-o", "--out", required=True, help="output folder (its name should say synthetic)")
    s.add_argument("--debug", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``surfmap-learn surface``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            from learn.config import load_config

            overrides = list(args.set) + ([f"out_dir={_toml_str(args.out)}"] if args.out else [])
            cfg = load_config(args.config, RunConfig, overrides)
            result = run_experiment(cfg)
            from learn.utils import is_main_process

            if not is_main_process():
                return 0
            for ch, r in result["results"].items():
                p = r["pooled"]
                print(f"{ch}: accuracy {p['accuracy']:.3f} sensitivity {p['sensitivity']:.3f} "
                      f"specificity {p['specificity']:.3f} AUC {p['auc']:.3f} (n={p['n']})")
            from learn.uncertainty import format_summary

            print("\n".join(format_summary(result.get("uncertainty", {}))))
            print(f"results in {cfg.out_dir}")
            return 0
        from . import synthetic as S

        if args.cohort == "hcp_like":
            cohort = S.hcp_like_cohort(args.n_subjects, template=args.template, effect_size=args.effect_size,
                                       seed=args.seed)
        else:
            cohort = S.abide_like_cohort(max(2, args.n_subjects // 3), (2, 4), template=args.template,
                                         effect_size=args.effect_size, seed=args.seed)
        writer = cohort.write_freesurfer if args.layout == "freesurfer" else cohort.write_hcp
        root = writer(args.out)
        print(f"SYNTHETIC {cohort.spec.name} cohort ({cohort.n_subjects} subjects) written to {root}")
        return 0
    except (LearnError, ValueError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"surfmap-learn surface: error: {exc}", file=sys.stderr)
        return 1


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
