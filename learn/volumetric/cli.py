"""``surfmap-learn volumetric`` subcommands.

::

    surfmap-learn volumetric synth --out DIR [--sites 6 --per-site 40 --mci-per-site 0 --spacing 3]
    surfmap-learn volumetric train --config FILE [--set section.key=value ...]
    surfmap-learn volumetric predict --run DIR --cohort CSV --out CSV
    surfmap-learn volumetric qc --cohort CSV --mask NII --out DIR [--group dataset]
    surfmap-learn volumetric occlusion --run DIR --cohort CSV --out DIR [--fold K --cube 12 --step 6]
    surfmap-learn volumetric gradcam --run DIR --cohort CSV --out DIR [--layer ad_head.conv2]
    surfmap-learn volumetric clinical --predictions CSV --out DIR

``synth`` writes a SYNTHETIC cohort (NIfTI + ``SYNTHETIC_cohort.csv``) with planted effects; ``train`` runs the
cross-validation described by the config (see :mod:`learn.volumetric.config`) and writes checkpoints, the resolved
config, predictions and ``results.json`` to ``output_dir``. Multi-GPU: ``torchrun --nproc-per-node N -m
learn.volumetric.cli train --config FILE``.
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
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write a SYNTHETIC cohort with planted effects")
    s.add_argument("--out", required=True)
    s.add_argument("--sites", type=int, default=6)
    s.add_argument("--per-site", type=int, default=40)
    s.add_argument("--mci-per-site", type=int, default=0)
    s.add_argument("--spacing", type=float, default=3.0)
    s.add_argument("--effect", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="cross-validate a model from a config file")
    t.add_argument("--config", required=True, help="TOML or JSON file (see learn.volumetric.config)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=2")
    r = sub.add_parser("predict", help="score a cohort with the mean of a run's fold models")
    r.add_argument("--run", required=True)
    r.add_argument("--cohort", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="auto")
    q = sub.add_parser("qc", help="template-correlation quality control")
    q.add_argument("--cohort", required=True)
    q.add_argument("--mask", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--group", default="dataset")
    q.add_argument("--n-per-group", type=int, default=10)
    q.add_argument("--n-sd", type=float, default=2.0)
    q.add_argument("--seed", type=int, default=0)
    for name, text in (("occlusion", "group accuracy-drop occlusion map"), ("gradcam", "mean Grad-CAM map")):
        o = sub.add_parser(name, help=text)
        o.add_argument("--run", required=True)
        o.add_argument("--cohort", required=True, help="test subjects (labelled)")
        o.add_argument("--out", required=True)
        o.add_argument("--fold", type=int, default=None, help="fold model (default: the most accurate)")
        o.add_argument("--device", default="auto")
        o.add_argument("--batch-size", type=int, default=24)
        if name == "occlusion":
            o.add_argument("--cube", type=int, default=12)
            o.add_argument("--step", type=int, default=6)
        else:
            o.add_argument("--layer", default=None, help="default: conv_7b (sex/age) or ad_head.conv2 (AD)")
    c = sub.add_parser("clinical", help="MMSE correlation, MCI conversion, GLM, intervals")
    c.add_argument("--predictions", required=True, help="CSV from 'predict' (score, mmse, diagnosis, age, sex, label)")
    c.add_argument("--out", required=True)
    c.add_argument("--threshold", type=float, default=0.5)
    return p


def _pick_fold(run, fold):
    import json
    from pathlib import Path

    if fold is not None:
        return fold
    res = json.loads((Path(run) / "results.json").read_text())
    accs = [(f.get("accuracy", -1), f["fold"]) for f in res["folds"]]
    return max(accs)[1]


def _analysis(args) -> None:
    import json
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    out = Path(args.out)
    if args.cmd == "predict":
        from learn.utils import get_device
        from learn.volumetric.train import predict_cohort

        df = predict_cohort(args.run, args.cohort, get_device(args.device))
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        print(f"scores of {len(df)} scans written: {out}")
        return
    out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "qc":
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
        plot_qc(report, out / "qc_correlations.png", args.group)
        print(f"QC: {int(report.qc_excluded.sum())} of {len(report)} scans excluded; report: {out / 'qc_report.csv'}")
        return
    if args.cmd in ("occlusion", "gradcam"):

        from learn.utils import get_device
        from learn.volumetric.occlusion import occlusion_map, to_input_space
        from learn.volumetric.plots import plot_orthogonal
        from learn.volumetric.train import load_fold_models, load_inputs

        device = get_device(args.device)
        co, x, crop, (shape, affine) = load_inputs(args.run, args.cohort)
        from learn.volumetric.train import _run_inputs

        cfg = _run_inputs(args.run)
        y = co[cfg.data.label_column].to_numpy(dtype=float)
        k = _pick_fold(args.run, args.fold)
        model = load_fold_models(args.run, device)[k]
        if args.cmd == "occlusion":
            vmap, grid, base = occlusion_map(model, x, y, cube=args.cube, step=args.step,
                                             batch_size=args.batch_size, device=device, progress=True)
            title, name, unit = f"occlusion (fold {k}, baseline accuracy {base:.3f})", "occlusion", "accuracy drop"
        else:
            from learn.volumetric.gradcam import grad_cam

            layer = args.layer or ("ad_head.conv2" if cfg.model.kind == "ad" else "conv_7b")
            cams = [grad_cam(model.cpu(), x[i:i + args.batch_size], layer) for i in range(0, x.shape[0],
                                                                                          args.batch_size)]
            vmap = np.concatenate(cams).mean(0)
            title, name, unit = f"Grad-CAM {layer} (fold {k}, mean of {x.shape[0]})", "gradcam", "Grad-CAM"
        full = to_input_space(vmap, crop, shape)
        nib.save(nib.Nifti1Image(full.astype(np.float32), affine), out / f"{name}.nii.gz")
        bg = x[:, 0].mean(0).numpy()
        plot_orthogonal(vmap, out / f"{name}.png", background=bg, title=title, label=unit)
        print(f"{name} map written: {out / (name + '.nii.gz')}")
        return
    if args.cmd == "clinical":
        import pandas as pd

        from learn.metrics import binary_metrics, subsample_ci
        from learn.volumetric.analysis import glm_group_effect, mci_conversion, mmse_spearman, summary_table
        from learn.volumetric.plots import plot_scores_vs_mmse

        df = pd.read_csv(args.predictions)
        missing = [c for c in ("score", "diagnosis") if c not in df.columns]
        if missing:
            raise ValueError(f"{args.predictions!r} lacks column(s) {missing}; write it with 'predict'")
        results = {}
        if "label" in df.columns and df["label"].notna().any():
            lab = df[df["label"].notna()]
            for thr in sorted({args.threshold, 0.3}):
                m = binary_metrics(lab["label"].astype(int), lab["score"], threshold=thr)
                ci = subsample_ci(lab["label"].astype(int), lab["score"], threshold=thr)
                m.update({f"{k}_ci": v for k, v in ci.items()})
                results[f"AD_vs_NC_threshold_{thr:g}"] = m
        if "mmse" in df.columns:
            sp = mmse_spearman(df["score"], df["mmse"], df["diagnosis"].astype(str))
            for g, v in sp.items():
                results[f"spearman_mmse_{g}"] = v
            plot_scores_vs_mmse(df["score"], df["mmse"], df["diagnosis"], out / "scores_vs_mmse.png")
        mci = df[df["diagnosis"].isin(["pMCI", "sMCI"])]
        if len(mci):
            prog = (mci["diagnosis"] == "pMCI").to_numpy()
            results["mci_conversion"] = mci_conversion(mci["score"], prog, threshold=args.threshold)
            if {"age", "sex"} <= set(mci.columns):
                results["glm_score_pmci_vs_smci"] = glm_group_effect(mci["score"], prog, mci["age"], mci["sex"])
                if "mmse" in mci.columns:
                    results["glm_mmse_pmci_vs_smci"] = glm_group_effect(mci["mmse"], prog, mci["age"], mci["sex"])
        table = summary_table(results)
        table.to_csv(out / "clinical_summary.csv", index=False)
        (out / "clinical_summary.json").write_text(json.dumps(results, indent=2, default=str))
        print(table.to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "synth":
            from learn.volumetric.synthetic import make_synthetic_cohort

            csv = make_synthetic_cohort(args.out, n_sites=args.sites, n_per_site=args.per_site,
                                        n_mci_per_site=args.mci_per_site, spacing=args.spacing,
                                        effect=args.effect, seed=args.seed)
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
            print(json.dumps({"output_dir": res["output_dir"], "synthetic": res["synthetic"], **summary},
                             indent=2, default=str))
        return 0
    except (SurfmapError, OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"surfmap-learn volumetric: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
