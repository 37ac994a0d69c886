"""Tables and figures of a seed-001 experiment (:mod:`learn.surface.experiment`), in the run folder.

- ``table.csv`` / ``table.md``: the seed's Table 1 (per strategy: each channel, the mean of the channels, the
  XGBoost stack) and Table 2 (the final model of each strategy beside the baselines): Acc, Sen, Spc (%), AUC, with
  95% bootstrap intervals, and whether the AUC is within noise of 0.5 (its interval holds 0.5);
- ``results.json``: the same numbers, per fold too, with the run's metadata;
- ``roc_<strategy>.png``, ``roc_methods.png``, ``confusion_matrices.png``;
- ``occlusion/<strategy>/<channel>/<score>_class<c>.png`` (flat map and cortex) and ``occlusion_<strategy>.png``
  (every channel and class on the flat square);
- ``report.md``: what was run, the tables, the figures, and the SYNTHETIC / chance notes.

Every file made from a SYNTHETIC cohort says SYNTHETIC.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from learn import MetricUndefinedError

__all__ = ["STRATEGY_LABELS", "metrics_row", "write_report"]

log = logging.getLogger(__name__)

STRATEGY_LABELS = {"two_stage": "2 stage", "imagenet": "transfer", "scratch": "scratch",
                   "source_only": "source only (no ImageNet)"}
BASELINE_LABELS = {"pca_svm": "PCA + SVM", "cnn3d": "3D CNN (3D mesh)", "slices": "2D CNN (slice)"}
SYNTHETIC_NOTE = ("SYNTHETIC data: these numbers describe the generator of learn.surface.synthetic (planted "
                  "effects of known size), not brains.")


def metrics_row(label, score, *, bootstrap_rounds: int = 1000, seed: int = 0) -> dict:
    """Pooled out-of-fold metrics (%) with 95% bootstrap intervals and a chance flag."""
    from learn.metrics import binary_metrics, bootstrap_ci

    y = np.asarray(label).astype(int)
    s = np.asarray(score, dtype=np.float64)
    row = {"n": int(len(y))}
    try:
        m = binary_metrics(y, s)
    except MetricUndefinedError as exc:
        acc = float(np.mean((s >= 0.5) == y)) if len(y) else float("nan")
        return {**row, "Acc (%)": round(100 * acc, 2), "Sen (%)": np.nan, "Spc (%)": np.nan, "AUC": np.nan,
                "Acc 95% CI": "", "AUC 95% CI": "", "vs chance": f"undefined ({exc})"}
    row.update({"Acc (%)": round(100 * m["accuracy"], 2), "Sen (%)": round(100 * m["sensitivity"], 2),
                "Spc (%)": round(100 * m["specificity"], 2), "AUC": round(m["auc"], 4)})
    ci = {}
    if bootstrap_rounds >= 2:
        try:
            ci = bootstrap_ci(y, s, n_rounds=bootstrap_rounds, seed=seed)
        except (MetricUndefinedError, ValueError) as exc:
            log.info("no bootstrap interval: %s", exc)
    if ci:
        a, u = ci["accuracy"], ci["auc"]
        row["Acc 95% CI"] = f"{100 * a[0]:.1f}-{100 * a[1]:.1f}"
        row["AUC 95% CI"] = f"{u[0]:.3f}-{u[1]:.3f}"
        row["vs chance"] = "within noise of 0.5" if u[0] <= 0.5 <= u[1] else (
            "above chance" if u[0] > 0.5 else "below chance")
    else:
        row["Acc 95% CI"] = row["AUC 95% CI"] = ""
        row["vs chance"] = "no interval (bootstrap_rounds < 2)"
    return row


def _fold_rows(df: pd.DataFrame) -> list:
    from learn.metrics import binary_metrics

    out = []
    for k, t in df.groupby("fold"):
        try:
            m = binary_metrics(t["label"].to_numpy().astype(int), t["score"].to_numpy())
        except MetricUndefinedError as exc:
            m = {"note": str(exc), "n": len(t)}
        out.append({"fold": int(k), **m})
    return out


def _methods(cfg, strategies: dict, baselines: dict) -> tuple[list, dict]:
    """Rows (table, method, strategy, input, DataFrame of subject-level scores) and Table 2's methods."""
    model = cfg.model.name
    rows, final = [], {}
    for s, r in strategies.items():
        pred = r["predictions"]
        test = pred[pred["role"] == "test"]
        name = f"{model} {STRATEGY_LABELS.get(s, s)}"
        for ch in dict.fromkeys(test["channel"]):
            rows.append(("Table 1", name, s, ch, test[test["channel"] == ch]))
        mean = test.groupby(["subject", "label", "fold"], as_index=False)["score"].mean()
        rows.append(("Table 1", name, s, "mean of channels", mean))
        if r.get("stacked") is not None:
            rows.append(("Table 1", name, s, "stacked (XGBoost)", r["stacked"]))
            final[name] = r["stacked"]
        else:
            final[name] = mean
    for b, df in baselines.items():
        final[BASELINE_LABELS.get(b, b)] = df
    for name, df in final.items():
        rows.append(("Table 2", name, "", "final", df))
    return rows, final


def write_report(out, *, cfg, strategies: dict, baselines: dict, occlusion: dict, target, synthetic: bool,
                 splits, seconds: float) -> dict:
    """Write the tables, figures and ``report.md`` of a finished run; returns the summary dict."""
    from learn.checkpoint import to_jsonable

    out = Path(out)
    rows, final = _methods(cfg, strategies, baselines)
    records, per_fold = [], {}
    for table, method, strategy, inp, df in rows:
        m = metrics_row(df["label"], df["score"], bootstrap_rounds=cfg.cv.bootstrap_rounds, seed=cfg.cv.seed)
        rec = {"table": table, "method": method, "strategy": strategy, "input": inp, **m}
        if synthetic:
            rec["data"] = "SYNTHETIC"
        records.append(rec)
        per_fold[f"{table} | {method} | {inp}"] = _fold_rows(df)
    table = pd.DataFrame(records)
    table.to_csv(out / "table.csv", index=False)
    figures = _figures(out, rows, final, occlusion, target, synthetic, cfg)
    first = f"{cfg.model.name} {STRATEGY_LABELS.get(cfg.transfer.strategies[0], cfg.transfer.strategies[0])}"
    head = table[(table["table"] == "Table 2") & (table["method"] == first)].iloc[0].to_dict()
    chance = head["vs chance"] == "within noise of 0.5"
    notes = []
    if synthetic:
        notes.append(SYNTHETIC_NOTE)
    if cfg.cv.shuffle_labels:
        notes.append("Labels were SHUFFLED (null run): every AUC should be within noise of 0.5.")
    if chance:
        notes.append(f"The {'SYNTHETIC ' if synthetic else ''}main result ({first}, AUC {head['AUC']}, 95% CI "
                     f"{head['AUC 95% CI']}) is within noise of chance (AUC 0.5): this run shows no evidence of a "
                     "learnable effect.")
    meta = {"synthetic": synthetic, "notes": notes, "n_subjects": int(len(target.dataset)),
            "channels": list(target.dataset.channels), "n_outer_folds": len(splits), "scheme": cfg.cv.scheme,
            "strategies": cfg.transfer.strategies, "shuffled_labels": cfg.cv.shuffle_labels,
            "seconds": round(float(seconds), 1)}
    occ_json = {s: {ch: {k: {kk: vv for kk, vv in v.items() if kk != "values"} for k, v in d.items()}
                    for ch, d in per.items()} for s, per in occlusion.items()}
    (out / "results.json").write_text(json.dumps(to_jsonable(
        {"meta": meta, "table": records, "folds": per_fold, "occlusion": occ_json, "figures": figures}), indent=2))
    _markdown(out, table, meta, figures, notes)
    return {"meta": meta, "table": table, "notes": notes, "figures": figures, "chance": chance}


def _markdown(out: Path, table: pd.DataFrame, meta: dict, figures: list, notes: list) -> None:
    cols = ["method", "input", "Acc (%)", "Sen (%)", "Spc (%)", "AUC", "AUC 95% CI", "Acc 95% CI", "vs chance", "n"]
    lines = [f"# {'SYNTHETIC ' if meta['synthetic'] else ''}seed-001 experiment", ""]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    lines += [f"{meta['n_subjects']} target subjects, channels {', '.join(meta['channels'])}; "
              f"{meta['n_outer_folds']} outer folds ({meta['scheme']}); strategies {', '.join(meta['strategies'])}; "
              f"{meta['seconds']} s.", ""]
    for name, title in (("Table 1", "Table 1: strategies, per channel, mean and stack (pooled out-of-fold)"),
                        ("Table 2", "Table 2: final model of each strategy and the baselines")):
        t = table[table["table"] == name]
        lines += [f"## {title}{' (SYNTHETIC)' if meta['synthetic'] else ''}", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for _, r in t.iterrows()]
        lines.append("")
    lines += ["## Figures", ""] + [f"- `{f}`" for f in figures]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    (out / "table.md").write_text(text[text.index("## Table 1"):text.index("## Figures")])


def _figures(out: Path, rows, final: dict, occlusion: dict, target, synthetic: bool, cfg) -> list:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix, roc_curve

    tag = " (SYNTHETIC data)" if synthetic else ""
    made = []

    def roc(ax, df, label):
        y, s = df["label"].to_numpy().astype(int), df["score"].to_numpy()
        if len(np.unique(y)) < 2:
            return
        fpr, tpr, _ = roc_curve(y, s)
        from learn.metrics import roc_auc

        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc(y, s):.3f})")

    for s in dict.fromkeys(r[2] for r in rows if r[0] == "Table 1"):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        for table, method, strategy, inp, df in rows:
            if table == "Table 1" and strategy == s:
                roc(ax, df, inp)
        _roc_axes(ax, f"ROC, {STRATEGY_LABELS.get(s, s)}{tag}")
        made.append(_save(fig, out / f"roc_{s}.png"))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, df in final.items():
        roc(ax, df, name)
    _roc_axes(ax, f"ROC, final models and baselines{tag}")
    made.append(_save(fig, out / "roc_methods.png"))

    n = len(final)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (name, df) in zip(axes[0], final.items()):
        cm = confusion_matrix(df["label"].to_numpy().astype(int), (df["score"].to_numpy() >= 0.5).astype(int),
                              labels=[0, 1])
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"Confusion matrices (threshold 0.5){tag}")
    fig.tight_layout()
    made.append(_save(fig, out / "confusion_matrices.png"))
    made += _occlusion_figures(out, occlusion, target, synthetic, cfg)
    return [str(Path(p).relative_to(out)) for p in made]


def _roc_axes(ax, title):
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _occlusion_figures(out: Path, occlusion: dict, target, synthetic: bool, cfg) -> list:
    import matplotlib.pyplot as plt

    from .occlusion import plot_occlusion

    made = []
    tag = " (SYNTHETIC data)" if synthetic else ""
    main_score = cfg.occlusion.scores[0]
    for s, per in occlusion.items():
        chans = list(per)
        if not chans:
            continue
        fig, axes = plt.subplots(2, len(chans), figsize=(2.6 * len(chans), 5.2), squeeze=False)
        for j, ch in enumerate(chans):
            for c in (0, 1):
                ax = axes[c, j]
                entry = per[ch].get(f"{main_score}_class{c}")
                ax.set_xticks([]), ax.set_yticks([])
                if entry is None:
                    continue
                im = ax.imshow(np.load(entry["image"]), cmap="hot")
                fig.colorbar(im, ax=ax, fraction=0.046)
                ax.set_title(f"{ch}\nclass {c} (n={entry['n_subjects']})", fontsize=8)
        fig.suptitle(f"Occlusion ({main_score} drop), {STRATEGY_LABELS.get(s, s)}, test subjects only{tag}")
        fig.tight_layout()
        made.append(_save(fig, out / f"occlusion_{s}.png"))
        for ch in chans:
            hemi = ch.split("_", 1)[0]
            mesh = target.meshes.get(hemi)
            if mesh is not None and np.ptp(np.asarray(mesh.vertices)[:, 2]) == 0:
                mesh = None  # a flat test grid: the flat map says it all
            if mesh is None and hemi in cfg.occlusion.surfaces:
                import surfmap

                mesh = surfmap.read_surface(cfg.occlusion.surfaces[hemi])
            for key, entry in per[ch].items():
                if not key.startswith(main_score):
                    continue
                values = entry.get("values")
                fig = plot_occlusion(np.load(entry["image"]), mesh if values is not None else None, values,
                                     title=f"{STRATEGY_LABELS.get(s, s)} {ch} {key.replace('_', ', ')} "
                                           f"(n={entry['n_subjects']})",
                                     synthetic=synthetic, hemi=hemi, score=main_score)
                made.append(_save(fig, Path(entry["image"]).with_suffix(".png")))
    return made
