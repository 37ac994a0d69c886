"""surfmap-learn volumetric: the 3D CNN path of seed 000 (workflow: learn/volumetric/README.md).

::

    surfmap-learn volumetric synth --out DIR [--sites 6 --per-site 40 --mci-per-site 0 --spacing 3]
    surfmap-learn volumetric qc --cohort CSV --mask NII --out DIR [--group dataset]
    surfmap-learn volumetric train --config FILE [--set section.key=value ...]
    surfmap-learn volumetric predict --run DIR --cohort CSV --out CSV
    surfmap-learn volumetric clinical --predictions RUN/cv_predictions.csv [PRED.csv ...] --out DIR
    surfmap-learn volumetric occlusion --run DIR --cohort CSV --out DIR [--cube 12 --step 6]
    surfmap-learn volumetric gradcam --run DIR --cohort CSV --out DIR [--layer ad_head.conv2]

``synth`` writes a SYNTHETIC cohort (NIfTI + ``SYNTHETIC_cohort.csv``) with planted effects; ``qc`` writes
``qc_report.csv``, which training takes with ``data.qc_report``; ``train`` runs the cross-validation described by
the config (:mod:`learn.volumetric.config`; examples in ``examples/configs/volumetric_*.toml``) and writes
checkpoints, the resolved config, out-of-fold predictions and ``results.json`` to ``output_dir``; ``predict``
scores any cohort with the mean of the fold models and marks in-sample scans; ``clinical`` refuses in-sample
scores; ``occlusion`` and ``gradcam`` use each fold's own test subjects (or an independent cohort). Progress goes to
stderr (``-q`` silences it). Multi-GPU: ``torchrun --nproc-per-node N -m learn.volumetric.cli train --config FILE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from surfmap.exceptions import SurfmapError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surfmap-learn volumetric", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="debug-level log lines")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only (no progress lines)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write a SYNTHETIC cohort with planted effects")
    s.add_argument("--out", required=True)
    s.add_argument("--sites", type=int, default=6)
    s.add_argument("--per-site", type=int, default=40)
    s.add_argument("--mci-per-site", type=int, default=0)
    s.add_argument("--spacing", type=float, default=3.0)
    s.add_argument("--effect", type=float, default=1.0)
    s.add_argument("--qc-fraction", type=float, default=0.03, help="share of planted QC outliers")
    s.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="cross-validate a model from a TOML config (see learn/volumetric/README.md and "
                                     "examples/configs/volumetric_*.toml)")
    t.add_argument("--config", required=True, help="TOML or JSON file; every key is listed in the README")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=2")
    r = sub.add_parser("predict", help="score a cohort with the mean of a run's fold models (column in_sample "
                                       "marks scans whose subject trained a fold model)")
    r.add_argument("--run", required=True)
    r.add_argument("--cohort", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="auto")
    q = sub.add_parser("qc", help="template-correlation quality control (-> qc_report.csv for data.qc_report)")
    q.add_argument("--cohort", required=True)
    q.add_argument("--mask", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--group", default="dataset")
    q.add_argument("--n-per-group", type=int, default=10)
    q.add_argument("--n-sd", type=float, default=2.0)
    q.add_argument("--seed", type=int, default=0)
    for name, text in (("occlusion", "group accuracy-drop occlusion map"), ("gradcam", "mean Grad-CAM map")):
        o = sub.add_parser(name, help=text + " on each fold's own test subjects (or an independent cohort)")
        o.add_argument("--run", required=True)
        o.add_argument("--cohort", required=True,
                       help="labelled scans: the run's cohort (each fold model then sees only its own test "
                            "subjects) or an independent cohort (scored by --fold, default the most accurate fold)")
        o.add_argument("--out", required=True)
        o.add_argument("--fold", type=int, default=None, help="use only this fold's model")
        o.add_argument("--device", default="auto")
        o.add_argument("--batch-size", type=int, default=24)
        if name == "occlusion":
            o.add_argument("--cube", type=int, default=12, help="cube edge in voxels (12 = 18 mm at 1.5 mm)")
            o.add_argument("--step", type=int, default=6, help="step in voxels (6 = 9 mm at 1.5 mm)")
        else:
            o.add_argument("--layer", default=None, help="default: conv_7b (sex/age) or ad_head.conv2 (AD)")
    c = sub.add_parser("clinical", help="AD vs NC with intervals, MMSE correlation, MCI conversion, GLM, 1.5T vs 3T")
    c.add_argument("--predictions", required=True, nargs="+",
                   help="out-of-sample scores: a run's cv_predictions.csv and/or 'predict' output for scans that no "
                        "fold model trained on (in-sample rows are refused)")
    c.add_argument("--out", required=True)
    c.add_argument("--threshold", type=float, default=0.5)
    c.add_argument("--screening-threshold", type=float, default=0.3,
                   help="second, lower threshold (released code 0.3; the paper's example is 0.2)")
    c.add_argument("--compare-column", default=None,
                   help="column with two groups (e.g. field_strength) for the accuracy permutation test")
    c.add_argument("--n-permutations", type=int, default=100_000)
    return p


def _synthetic(df) -> bool:
    return bool("synthetic" in df.columns and df["synthetic"].astype(str).str.lower().eq("true").any())


def _predict(args, out) -> None:
    from learn.utils import get_device
    from learn.volumetric.train import predict_cohort

    df = predict_cohort(args.run, args.cohort, get_device(args.device))
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    n_in = int(df["in_sample"].sum())
    print(f"scores of {len(df)} scans written: {out}" + (
        f" ({n_in} in-sample: their subjects trained the fold models; 'clinical' refuses them, use the run's "
        "cv_predictions.csv for those)" if n_in else " (none of them trained the fold models)"))


def _qc(args, out) -> None:
    import nibabel as nib
    import numpy as np

    from learn.volumetric.data import check_grid, load_mask, read_cohort
    from learn.volumetric.plots import plot_qc
    from learn.volumetric.qc import run_qc

    co = read_cohort(args.cohort, label_column=None)
    shape, affine = check_grid(co, reference=args.mask)
    mask = load_mask(args.mask, shape, affine)
    report, template = run_qc(co, mask, group=args.group, n_per_group=args.n_per_group, n_sd=args.n_sd,
                              seed=args.seed)
    report.to_csv(out / "qc_report.csv", index=False)
    nib.save(nib.Nifti1Image(template.astype(np.float32), affine), out / "qc_template_gmv.nii.gz")
    plot_qc(report, out / "qc_correlations.png", args.group,
            title=("SYNTHETIC cohort - " if _synthetic(co) else "") + "QC: template correlation (red: excluded)")
    print(f"QC: {int(report.qc_excluded.sum())} of {len(report)} scans excluded; report: {out / 'qc_report.csv'}; "
          f"train without them with: data.qc_report = \"{(out / 'qc_report.csv').resolve()}\"")


def _out_of_sample_sets(args, co, device):
    """[(fold, model, row positions)] and a sentence saying which subjects each fold model scores."""
    import numpy as np

    from learn import DataError
    from learn.volumetric.train import _fold_models, fold_splits, training_subjects

    models = dict(_fold_models(args.run, device))
    if args.fold is not None and args.fold not in models:
        raise DataError(f"--fold {args.fold}: the run has fold models {sorted(models)}")
    subj = co["subject"].astype(str).to_numpy()
    trained = training_subjects(args.run)
    if not np.isin(subj, list(trained)).any():
        k = args.fold if args.fold is not None else _pick_fold(args.run, models)
        return [(k, models[k], np.arange(len(co)))], (f"{len(co)} scans that no fold model trained on (an "
                                                     f"independent set), with fold {k}'s model")
    splits = fold_splits(args.run)
    sets = []
    for k, m in models.items():
        if args.fold is not None and k != args.fold:
            continue
        rows = np.flatnonzero(np.isin(subj, splits.get(k, {}).get("test", [])))
        if rows.shape[0]:
            sets.append((k, m, rows))
    if not sets:
        raise DataError(f"every subject of {args.cohort!r} trained the selected fold model(s) and none is in a fold's "
                        "test set (a cv.scheme = 'none' run?): give an independent labelled cohort")
    used = sum(r.shape[0] for _, _, r in sets)
    return sets, (f"each fold's own test subjects ({used} of {len(co)} scans; folds "
                  f"{', '.join(f'{k}: {r.shape[0]}' for k, _, r in sets)})")


def _pick_fold(run, models):
    from pathlib import Path

    res = json.loads((Path(run) / "results.json").read_text())
    accs = [(f.get("accuracy", -1.0), f["fold"]) for f in res["folds"] if f["fold"] in models]
    accs = [(a if a == a else -1.0, k) for a, k in accs]  # NaN (undefined) ranks last
    return max(accs)[1] if accs else min(models)


def _maps(args, out) -> None:
    import nibabel as nib
    import numpy as np

    from learn.utils import get_device
    from learn.volumetric.occlusion import occlusion_map, to_input_space
    from learn.volumetric.plots import plot_orthogonal
    from learn.volumetric.train import _run_inputs, load_inputs

    device = get_device(args.device)
    cfg = _run_inputs(args.run)
    co, x, crop, (shape, affine) = load_inputs(args.run, args.cohort)
    y = co[cfg.data.label_column].to_numpy(dtype=float)
    sets, which = _out_of_sample_sets(args, co, device)
    print(f"{args.cmd}: scoring {which}", file=sys.stderr)
    total, weight, info = None, 0, []
    for k, model, rows in sets:
        if args.cmd == "occlusion":
            vmap, _, base = occlusion_map(model, x[rows], y[rows], cube=args.cube, step=args.step,
                                          batch_size=args.batch_size, device=device, progress=True)
            info.append({"fold": k, "n": int(rows.shape[0]), "baseline_accuracy": base})
        else:
            from learn.volumetric.gradcam import grad_cam

            layer = args.layer or ("ad_head.conv2" if (cfg.model.kind == "ad" and cfg.model.transfer == "stem")
                                   else "conv_7b")
            model = model.cpu()
            cams = [grad_cam(model, x[rows[i:i + args.batch_size]], layer)
                    for i in range(0, rows.shape[0], args.batch_size)]
            vmap = np.concatenate(cams).mean(0)
            info.append({"fold": k, "n": int(rows.shape[0]), "layer": layer})
        total = vmap * rows.shape[0] if total is None else total + vmap * rows.shape[0]
        weight += rows.shape[0]
    vmap = total / weight
    name = args.cmd
    full = to_input_space(vmap, crop, shape)
    nib.save(nib.Nifti1Image(full.astype(np.float32), affine), out / f"{name}.nii.gz")
    tag = "SYNTHETIC - " if _synthetic(co) else ""
    if name == "occlusion":
        base = sum(d["baseline_accuracy"] * d["n"] for d in info) / weight
        title = f"{tag}occlusion, mean accuracy drop (baseline accuracy {base:.3f}, n = {weight})"
        unit = "accuracy drop"
    else:
        title = f"{tag}Grad-CAM {info[0]['layer']} (mean of {weight} scans)"
        unit = "Grad-CAM"
    if cfg.data.mask:  # the whole brain mask as background (the mean input covers the crop only)
        full_bg = np.asarray(nib.load(cfg.data.mask).dataobj, dtype=np.float32)
    else:
        full_bg = to_input_space(x[:, 0].mean(0).numpy(), crop, shape)
    plot_orthogonal(full, out / f"{name}.png", background=full_bg, affine=affine, title=title, label=unit)
    (out / f"{name}.json").write_text(json.dumps({"scored": which, "folds": info, "synthetic": bool(tag)}, indent=2))
    print(f"{name} map written: {out / (name + '.nii.gz')} ({which})")


def _read_predictions(paths):
    """Concatenate prediction tables, refusing in-sample scores and tables of unknown provenance."""
    import pandas as pd

    from learn import DataError

    frames = []
    for path in paths:
        df = pd.read_csv(path)
        if "score" not in df.columns:
            raise DataError(f"{path!r} has no 'score' column; give a run's cv_predictions.csv or 'predict' output")
        if "fold" in df.columns and "y_true" in df.columns:
            src = "out-of-fold (cv_predictions)"
        elif "in_sample" in df.columns:
            ins = df["in_sample"].astype(str).str.lower().eq("true")
            if ins.any():
                raise DataError(
                    f"{path!r}: {int(ins.sum())} of {len(df)} scans (e.g. {df.loc[ins, 'subject'].iloc[0]!r}) were scored "
                    "by fold models that trained on them (column in_sample); in-sample scores overstate every "
                    "analysis. Use the run's cv_predictions.csv for its training cohort, and 'predict' only for scans "
                    "that no fold model trained on (MCI, independent cohorts)")
            src = "predict (out of sample)"
        else:
            raise DataError(f"{path!r} has neither a 'fold' column (cv_predictions.csv) nor an 'in_sample' column "
                            "('predict' output), so whether its scores are out of sample is unknown; regenerate it")
        df["source"] = f"{path} [{src}]"
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    key = ["subject", "session"] if "session" in df.columns else ["subject"]
    if "subject" in df.columns:
        dup = df.duplicated(key, keep="first")
        if dup.any():
            logging.getLogger(__name__).warning("%d scans appear in more than one predictions table; the first is kept",
                                                int(dup.sum()))
            df = df[~dup].reset_index(drop=True)
    return df


def _clinical(args, out) -> None:

    from learn import MetricUndefinedError
    from learn.metrics import binary_metrics, subsample_ci
    from learn.volumetric.analysis import (
        accuracy_difference_test,
        glm_group_effect,
        mci_conversion,
        mmse_spearman,
        summary_table,
    )
    from learn.volumetric.plots import plot_scores_vs_mmse

    df = _read_predictions(args.predictions)
    synthetic = _synthetic(df)
    results = {}

    def record(name, fn, *a, **kw):
        try:
            results[name] = fn(*a, **kw)
        except MetricUndefinedError as exc:
            results[name] = {"undefined": str(exc)}

    lab_col = "label" if "label" in df.columns else ("y_true" if "y_true" in df.columns else None)
    lab = df[df[lab_col].notna()] if lab_col else df.iloc[:0]
    if len(lab):
        y = lab[lab_col].astype(int).to_numpy()
        for thr in sorted({args.threshold, args.screening_threshold}):
            def _with_ci(thr=thr):
                m = binary_metrics(y, lab["score"], threshold=thr)
                try:
                    ci = subsample_ci(y, lab["score"], threshold=thr)
                    m.update({f"{k}_ci": v for k, v in ci.items()})
                except MetricUndefinedError as exc:
                    m["ci_undefined"] = str(exc)
                return m
            record(f"AD_vs_NC_threshold_{thr:g}", _with_ci)
        if args.compare_column:
            if args.compare_column not in lab.columns:
                from learn import DataError

                raise DataError(f"--compare-column {args.compare_column!r} is not a column of the predictions; "
                                f"found {list(lab.columns)}")
            sel = lab[args.compare_column].notna().to_numpy()
            correct = (lab["score"].to_numpy() >= args.threshold) == (y == 1)
            record(f"accuracy_by_{args.compare_column}", accuracy_difference_test, correct[sel],
                   lab[args.compare_column].astype(str).to_numpy()[sel], n_permutations=args.n_permutations)
    if "mmse" in df.columns and "diagnosis" in df.columns:
        try:
            sp = mmse_spearman(df["score"], df["mmse"], df["diagnosis"].astype(str))
        except MetricUndefinedError as exc:
            sp = {"all": {"undefined": str(exc)}}
        for g, v in sp.items():
            results[f"spearman_mmse_{g}"] = v
        rho = sp.get("all", {}).get("rho", float("nan"))
        title = (("SYNTHETIC cohort - " if synthetic else "") + f"predicted AD score vs MMSE, Spearman rho = "
                 f"{rho:.2f} (n = {int(df[['score', 'mmse']].notna().all(axis=1).sum())})")
        plot_scores_vs_mmse(df["score"], df["mmse"], df["diagnosis"].astype(str), out / "scores_vs_mmse.png",
                            title=title, threshold=args.threshold)
    if "diagnosis" in df.columns:
        mci = df[df["diagnosis"].isin(["pMCI", "sMCI"])]
        if len(mci):
            prog = (mci["diagnosis"] == "pMCI").to_numpy()
            record("mci_conversion", mci_conversion, mci["score"], prog, threshold=args.threshold)
            if {"age", "sex"} <= set(mci.columns):
                record("glm_score_pmci_vs_smci", glm_group_effect, mci["score"], prog, mci["age"], mci["sex"])
                if "mmse" in mci.columns:
                    record("glm_mmse_pmci_vs_smci", glm_group_effect, mci["mmse"], prog, mci["age"], mci["sex"])
    results = {"synthetic": synthetic, "sources": sorted(set(df["source"])), **results}
    table = summary_table({k: v for k, v in results.items() if isinstance(v, dict)})
    table.to_csv(out / "clinical_summary.csv", index=False)
    (out / "clinical_summary.json").write_text(json.dumps(results, indent=2, default=str))
    if synthetic:
        print("SYNTHETIC cohort: these numbers test the pipeline, not real brains")
    for name, v in results.items():
        if isinstance(v, dict):
            print(f"{name}: {_brief(v)}")
    print(f"written: {out / 'clinical_summary.csv'}, {out / 'clinical_summary.json'}")


def _brief(v: dict) -> str:
    if "undefined" in v:
        return f"undefined ({v['undefined']})"
    keys = ("n", "accuracy", "sensitivity", "specificity", "auc", "rho", "p", "rate_pmci", "rate_smci", "t",
            "cohens_d", "difference", "groups")
    parts = []
    for k in keys:
        if k in v:
            val = v[k]
            parts.append(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}")
            if f"{k}_ci" in v:
                lo, hi = v[f"{k}_ci"]
                parts[-1] += f" [{lo:.3g}, {hi:.3g}]"
    return ", ".join(parts)


def _analysis(args) -> None:
    from pathlib import Path

    out = Path(args.out)
    if args.cmd == "predict":
        return _predict(args, out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "qc":
        return _qc(args, out)
    if args.cmd in ("occlusion", "gradcam"):
        return _maps(args, out)
    return _clinical(args, out)

def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    if not (args.quiet or args.verbose):  # progress lines (epochs, folds, occlusion positions) from learn.*
        logging.getLogger("learn").setLevel(logging.INFO)
    try:
        if args.cmd == "synth":
            from learn.volumetric.synthetic import make_synthetic_cohort

            csv = make_synthetic_cohort(args.out, n_sites=args.sites, n_per_site=args.per_site,
                                        n_mci_per_site=args.mci_per_site, spacing=args.spacing,
                                        effect=args.effect, seed=args.seed, qc_fraction=args.qc_fraction)
            print(f"SYNTHETIC cohort written: {csv}")
        elif args.cmd in ("predict", "qc", "occlusion", "gradcam", "clinical"):
            _analysis(args)
        elif args.cmd == "train":
            from learn.uncertainty import format_summary
            from learn.volumetric.train import load_volumetric_config
            from learn.volumetric.uncertainty import run_experiment_with_uncertainty

            res = run_experiment_with_uncertainty(load_volumetric_config(args.config, args.set))
            summary = {k: res[k] for k in ("cv", "test") if k in res}
            if "uncertainty" in res:
                summary["uncertainty"] = format_summary(res["uncertainty"])
            print(json.dumps({"output_dir": res["output_dir"], "synthetic": res["synthetic"],
                              "shuffled_labels": res["shuffled_labels"], **summary}, indent=2, default=str))
        return 0
    except (SurfmapError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"surfmap-learn volumetric: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
