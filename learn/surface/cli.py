"""``surfmap-learn surface``: seed 001's experiment on flat-map images from one config file.

Usage::

    surfmap-learn surface run --config experiment.toml [--out DIR] [--set section.key=value ...] [--debug]
    surfmap-learn surface predict RUN_DIR (--manifest M --table T | --synthetic-seed N) [--strategy S] -o OUT.csv
    surfmap-learn surface synth --cohort hcp_like|abide_like --template fsaverage5|fslr32k
                                --layout freesurfer|hcp --n-subjects N -o DIR

``run`` reads a TOML or JSON config. With a ``[target]`` section (and ``[source]``, ``[transfer]``,
``[stacking]``, ``[occlusion]``, ``[baselines]``) it runs the whole experiment of
:mod:`learn.surface.experiment`: stage one on the source cohort, each transfer strategy's cross-validation on the
target cohort with inner folds, XGBoost stacking, occlusion maps of the test subjects, the baselines, and the
report (tables in the layout of the seed's Tables 1-2, ROC curves, confusion matrices, occlusion maps on the
cortex). Every unit is resumable: rerun the same command after an interruption. With a ``[data]`` section
instead it runs the single-stage cross-validation (one network per channel). Unknown keys fail with the list of
allowed ones; ``run --help`` lists every section and key with its default. Example configs:
``examples/configs/surface_cpu_synthetic.toml`` (SYNTHETIC, minutes on 2 CPU cores) and
``examples/configs/surface_seed001_full.toml`` (the seed's recipe on HCP + ABIDE outputs of ``surfmap batch``).

``predict`` scores new subjects with a finished run's fold ensemble (per channel, mean of channels, stacked).
``synth`` writes a SYNTHETIC cohort in a real folder layout (plus ``cohort.csv`` and ground-truth effect maps).

In the single-stage mode, ``[cv] repeats = R`` reruns the cross-validation with R fold assignments and seeds (mean,
SD and the corrected resampled t-interval) and ``[cv] permutations = P`` runs P within-site label permutations
(a p-value against chance and a null-distribution figure); see :mod:`learn.uncertainty`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from learn import ConfigError, LearnError

from .config import DataConfig, RunConfig, SyntheticConfig

__all__ = ["DataConfig", "RunConfig", "SyntheticConfig", "load_dataset", "main", "run_experiment"]

log = logging.getLogger(__name__)


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


def _run_help() -> str:
    from .config import describe

    return ("A whole experiment has the sections below (defaults shown; the seed's recipe is the default "
            "schedule).\nA config with a [data] section instead of [target] runs single-stage cross-validation "
            "([data], [synthetic], [model], [schedule], [cv]).\n\n" + describe())


def _parser(full_help: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surfmap-learn surface", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run (or resume) an experiment from a config file",
                       description="Run or resume seed 001's experiment from a TOML / JSON config.",
                       epilog=_run_help() if full_help else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--config", required=True, help="TOML or JSON experiment config")
    r.add_argument("--out", help="output folder (overrides out_dir)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set schedule.epochs=10 (repeatable)")
    r.add_argument("--debug", action="store_true", help="show the traceback on error")
    q = sub.add_parser("predict", help="score new subjects with a finished run's fold ensemble")
    q.add_argument("run_dir", help="output folder of `surfmap-learn surface run`")
    q.add_argument("--manifest", help="manifest.tsv of `surfmap batch` for the new subjects")
    q.add_argument("--table", help="cohort table of the new subjects (subject, label or empty, site)")
    q.add_argument("--synthetic-seed", type=int, help="score a fresh SYNTHETIC target cohort drawn with this seed")
    q.add_argument("--strategy", help="which strategy's models (default: the run's first)")
    q.add_argument("-o", "--out", required=True, help="output CSV")
    q.add_argument("--debug", action="store_true")
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


_EXPERIMENT_SECTIONS = ("target", "source", "transfer", "stacking", "occlusion", "baselines")


def _run(args) -> int:
    from learn.config import apply_overrides, config_from_dict, read_config_file

    overrides = list(args.set) + ([f"out_dir={_toml_str(args.out)}"] if args.out else [])
    raw = apply_overrides(read_config_file(args.config), overrides)
    if any(k in raw for k in _EXPERIMENT_SECTIONS):
        if "data" in raw or "synthetic" in raw:
            raise ConfigError("a config has either [data] / [synthetic] (single-stage cross-validation) or "
                              f"[target] and the experiment sections {list(_EXPERIMENT_SECTIONS)}; not both")
        from .config import ExperimentConfig
        from .experiment import run_experiment as run_full

        cfg = config_from_dict(ExperimentConfig, raw)
        summary = run_full(cfg)
        tag = "SYNTHETIC " if summary["meta"]["synthetic"] else ""
        t = summary["table"]
        for _, r in t[t["table"] == "Table 2"].iterrows():
            print(f"{tag}{r['method']}: accuracy {r['Acc (%)']}% sensitivity {r['Sen (%)']}% specificity "
                  f"{r['Spc (%)']}% AUC {r['AUC']} (95% CI {r['AUC 95% CI']}; {r['vs chance']}; n={r['n']})")
        for note in summary["notes"]:
            print(note)
        print(f"report in {Path(cfg.out_dir) / 'report.md'}")
        return 0
    cfg = config_from_dict(RunConfig, raw)
    result = run_experiment(cfg)
    from learn.utils import is_main_process

    if not is_main_process():
        return 0
    tag = "SYNTHETIC " if cfg.data.source == "synthetic" else ""
    for ch, r in result["results"].items():
        p = r["pooled"]
        print(f"{tag}{ch}: accuracy {p['accuracy']:.3f} sensitivity {p['sensitivity']:.3f} "
              f"specificity {p['specificity']:.3f} AUC {p['auc']:.3f} (n={p['n']})")
    from learn.uncertainty import format_summary

    print("\n".join(format_summary(result.get("uncertainty", {}))))
    print(f"results in {cfg.out_dir}")
    return 0


def _predict(args) -> int:
    import json

    from learn.config import config_from_dict

    from .config import ExperimentConfig
    from .experiment import load_cohort, predict_run

    run = Path(args.run_dir)
    if (args.synthetic_seed is None) == (args.manifest is None):
        raise ConfigError("predict needs either --manifest and --table (new subjects' images) or --synthetic-seed")
    if args.synthetic_seed is not None:
        path = run / "config.resolved.json"
        if not path.is_file():
            raise ConfigError(f"{str(run)!r} is not a run folder (no config.resolved.json)")
        cfg = config_from_dict(ExperimentConfig, json.loads(path.read_text()))
        data = load_cohort(cfg.target, seed_override=args.synthetic_seed,
                           name_suffix=f"-predict-seed{args.synthetic_seed}")
    else:
        if not args.table:
            raise ConfigError("--manifest needs --table (the cohort table of the new subjects)")
        data = _new_subjects(run, args.manifest, args.table)
    df = predict_run(run, data.dataset, strategy=args.strategy)
    if not data.labelled:
        df = df.drop(columns=["label"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    tag = "SYNTHETIC " if data.synthetic else ""
    col = "stacked" if "stacked" in df.columns else "mean"
    msg = f"{tag}{len(df)} subjects scored with {df['strategy'].iloc[0]} ({col}) -> {args.out}"
    if data.synthetic and "label" in df.columns and df["label"].nunique() == 2:
        from learn.metrics import roc_auc

        msg += f"; {tag}AUC against the generator's labels {roc_auc(df['label'], df[col]):.3f}"
    print(msg)
    return 0


def _new_subjects(run: Path, manifest, table):
    """New subjects' images with the run's metrics and hemispheres; labels may be absent (then 0, dropped)."""
    import json

    import pandas as pd

    from learn.config import config_from_dict

    from .config import ExperimentConfig
    from .dataset import SurfaceImageDataset
    from .experiment import ExperimentData

    path = run / "config.resolved.json"
    if not path.is_file():
        raise ConfigError(f"{str(run)!r} is not a run folder (no config.resolved.json)")
    tc = config_from_dict(ExperimentConfig, json.loads(path.read_text())).target
    sep = "\t" if str(table).lower().endswith((".tsv", ".tab")) else ","
    if not Path(table).is_file():
        raise FileNotFoundError(f"cohort table {str(table)!r} does not exist")
    t = pd.read_csv(table, sep=sep, dtype={tc.subject_column: str})
    labelled = tc.label_column in t.columns and t[tc.label_column].notna().all()
    if not labelled:
        t = t.assign(**{tc.label_column: 0})
    # the hemispheres and metrics of the channels the run trained ("left_thickness" ...)
    folds = run / "strategies"
    channels = sorted({p.name for p in folds.glob("*/folds/*") if p.is_dir()})
    if not channels:
        raise ConfigError(f"{str(run)!r} holds no fold models; has the run finished?")
    hemis = list(dict.fromkeys(c.split("_", 1)[0] for c in channels))
    metrics = list(dict.fromkeys(c.split("_", 1)[1] for c in channels))
    ds = SurfaceImageDataset.from_manifest(manifest, t, metrics=metrics, hemis=tuple(hemis),
                                           label_column=tc.label_column, subject_column=tc.subject_column,
                                           site_column=tc.site_column, on_missing=tc.on_missing)
    synthetic = bool("synthetic" in ds.table.columns and ds.table["synthetic"].astype(bool).any())
    return ExperimentData(ds, synthetic, labelled=labelled)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``surfmap-learn surface``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    full_help = len(argv) >= 1 and argv[0] == "run" and any(a in ("-h", "--help") for a in argv)
    args = _parser(full_help).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "predict":
            return _predict(args)
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
