"""Results to JSON, a Markdown report and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from surfmap._json import json_default as surfmap_json_default

_DROP = ("traceback", "faces_file", "warm_s_raw")


def json_default(x):
    """surfmap's encoder, and str() for anything else (a results file never fails to write)."""
    try:
        return surfmap_json_default(x)
    except TypeError:
        return str(x)


def strip_row(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in _DROP}


def _f(x, fmt="{:.3f}") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return fmt.format(x)


def _time(r):
    if "error" in r or "skipped" in r:
        return None
    return r.get("median_s") if r.get("median_s") is not None else r.get("first_s")


def _lscm_times(rows) -> dict:
    return {r["case"]: _time(r) for r in rows if r.get("method") == "igl_lscm" and _time(r)}


def _status(r) -> str:
    if "error" in r:
        return "error: " + r["error"].splitlines()[0][:80]
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    return ""


def comparison_table(rows: list[dict]) -> str:
    lscm = _lscm_times(rows)
    head = ("| cortex | method | n | first call (s) | warm median (s) | × LSCM | peak mem (MB) | flipped | "
            "mean \\|d\\| | p95 \\|d\\| | mean K | p95 K |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        d = r.get("distortion") or {}
        st = _status(r)
        t = _time(r)
        ratio = t / lscm[r["case"]] if t and r.get("case") in lscm else None
        if st:
            lines.append(f"| {r.get('case', '')} | {r.get('label', r.get('method'))} | {r.get('n', '')} | {st} "
                         "| | | | | | | | |")
            continue
        lines.append(
            f"| {r['case']} | {r.get('label', r['method'])} | {r['n']} | {_f(r.get('first_s'))} | "
            f"{_f(r.get('median_s'))} | {_f(ratio, '{:.2f}')} | {_f(r.get('peak_mem_mb'), '{:.0f}')} | "
            f"{d.get('flipped', '–')} | {_f(d.get('logarea_abs_mean'))} | {_f(d.get('logarea_abs_p95'))} | "
            f"{_f(d.get('dilatation_mean'))} | {_f(d.get('dilatation_p95'))} |"
        )
    return "\n".join(lines)


def scaling_table(scaling: dict) -> str:
    rows = scaling["rows"]
    ns = sorted({r["n"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = "| method | " + " | ".join(f"n = {n:,}" for n in ns) + " | exponent |\n"
    head += "|---|" + "---:|" * (len(ns) + 1)
    lines = [head]
    for m in methods:
        cells = []
        for n in ns:
            r = next((r for r in rows if r["method"] == m and r["n"] == n), None)
            if r is None:
                cells.append("–")
            elif _status(r):
                cells.append(_status(r))
            else:
                cells.append(_f(_time(r)) + (" (first call)" if r.get("median_s") is None else ""))
        e = scaling["exponents"].get(m)
        label = next(r.get("label", m) for r in rows if r["method"] == m)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_f(e, '{:.2f}')} |")
    return "\n".join(lines)


def stage_table(scaling: dict) -> str:
    rows = [r for r in scaling["rows"] if (r.get("info") or {}).get("timings")]
    if not rows:
        return "_(no stage timings in fm.info)_"
    lines = ["| method | n | stage timings (s) |", "|---|---:|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["n"])):
        t = r["info"]["timings"]
        cells = ", ".join(f"{k} {v:.3f}" for k, v in t.items() if isinstance(v, (int, float)))
        lines.append(f"| {r['method']} | {r['n']:,} | {cells} |")
    se = scaling.get("stage_exponents") or {}
    if se:
        lines.append("")
        lines.append("Fitted exponents per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in se.items()))
    return "\n".join(lines)


def profile_section(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if not r.get("profile"):
            continue
        out.append(f"**{r['label']}** on {r['case']} (cProfile, one warm call, top functions by own time):\n")
        out.append("| function | calls | own (s) | cumulative (s) |\n|---|---:|---:|---:|")
        for p in r["profile"][:10]:
            out.append(f"| `{p['function']}` | {p['ncalls']} | {p['tottime']:.3f} | {p['cumtime']:.3f} |")
        out.append("")
    return "\n".join(out)


BARS = {"surfmap_conformal": 2.0, "surfmap_ot": 4.0, "surfmap_flatten": 6.0}  # x LSCM (DESIGN.md)


def headline(results: dict) -> str:
    """The quality bars of DESIGN.md that this run measures, met or not."""
    rows = results.get("comparison") or []
    lscm = _lscm_times(rows)
    lines = ["| bar | cortex | measured | bar | met |", "|---|---|---:|---:|---|"]
    for case in ("fslr32k-left", "fslr32k-right", "fsaverage5-left", "fsaverage5-right"):
        for m, bar in BARS.items():
            r = next((r for r in rows if r.get("case") == case and r.get("method") == m), None)
            if r is None or not _time(r) or case not in lscm:
                continue
            x = _time(r) / lscm[case]
            lines.append(f"| {r.get('label', m)} time, × LSCM | {case} | {x:.2f} | {bar:.0f} | "
                         f"{'yes' if x <= bar else 'NO'} |")
    ra = results.get("raster") or {}
    if ra.get("template_bar_s"):
        t = ra["template_total_s"]
        lines.append(f"| template-mode raster, {ra['template_subjects']} × {ra['template_metrics']} at "
                     f"{ra['size']}² | {ra.get('map', '')[:20]} | {t:.2f} s | 5 s | {'yes' if t <= 5 else 'NO'} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def markdown(results: dict) -> str:
    m = results["machine"]
    s = ["# surfmap benchmark results\n",
         f"Machine: {m['cpu']}, {m['cores']} cores; load average at start {m.get('loadavg_at_start')}; "
         f"{m['date']}; Python {m['python']}; versions {m['versions']}.  ",
         f"Settings: {results['settings']}. Total {results.get('total_s', 0):.0f} s.\n",
         "Times: first call in a fresh process (Numba compilation or cache load included) and the median of "
         "the warm calls; × LSCM = warm median / libigl LSCM's warm median on the same cortex in the same run. "
         "Peak memory: the process's peak resident set during the calls (kernel counter `VmHWM`, reset "
         "before the first call) minus its resident set just before, native allocations included. d = natural log of the face's share of the flat area over its share of the 3D "
         "area; K = sigma1/sigma2 of the face's Jacobian (both by `surfmap.distortion`, over non-degenerate faces); "
         "flipped = faces with signed flat area <= 0 after mirroring a map that comes out mirrored as a whole.\n"]
    h = headline(results)
    if h:
        s += ["## Bars (DESIGN.md) measured in this run\n", h, ""]
    if results.get("comparison"):
        s += ["## Comparison\n", comparison_table(results["comparison"]), ""]
        s += [profile_section(results["comparison"])]
    if results.get("scaling"):
        s += ["## Scaling (left cortex; refined meshes are midpoint subdivisions)\n",
              results["scaling"].get("note", ""), "", "Time per call (s); exponent = least-squares slope of "
              "log time on log n.\n", scaling_table(results["scaling"]), "", stage_table(results["scaling"]), ""]
    if results.get("raster"):
        s += ["## Rasterization\n", _dict_table(results["raster"]), ""]
    if results.get("batch"):
        s += ["## Batch\n", _dict_table(results["batch"]), ""]
    if results.get("s1"):
        from .real_subject import markdown as s1_markdown

        s += [s1_markdown(results["s1"]), ""]
    if results.get("errors"):
        s += ["## Errors\n"] + [f"- {k}: `{v.strip().splitlines()[-1]}`" for k, v in results["errors"].items()]
    return "\n".join(s) + "\n"


def _dict_table(d: dict) -> str:
    lines = ["| quantity | value |", "|---|---|"]
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        lines.append(f"| {k} | {v} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_histograms(rows: list[dict], out: Path, case: str) -> list[Path]:
    """Histograms of |log area ratio| and dilatation per method, one figure per cortex."""
    plt = _plt()
    paths = []
    for c in sorted({r.get("case") for r in rows if r.get("case")}):
        # flatten gives the same map as the OT stage: left out so that the curves stay readable
        rs = [r for r in rows if r.get("case") == c and r.get("faces_file") and r.get("method") != "surfmap_flatten"]
        if not rs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for r in rs:
            with np.load(r["faces_file"]) as z:
                d, K = np.abs(z["d"]), z["K"]
            lab = r.get("label", r["method"])
            axes[0].hist(np.clip(d, 0, 4), bins=np.linspace(0, 4, 161), histtype="step", label=lab, density=True)
            axes[1].hist(np.clip(K, 1, 4), bins=np.linspace(1, 4, 121), histtype="step", label=lab,
                         density=True)
        axes[0].set_xlabel("|log area ratio| per face (natural log, totals normalised; clipped at 4)")
        axes[0].set_ylabel("density")
        axes[0].set_yscale("log")
        axes[1].set_xlabel("dilatation sigma1/sigma2 per face (clipped at 4)")
        axes[1].set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"distortion per method, {c}")
        fig.tight_layout()
        p = out / f"hist_{c}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def plot_scaling(rows: list[dict], out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for m in dict.fromkeys(r["method"] for r in rows):
        rs = sorted([r for r in rows if r["method"] == m and _time(r)], key=lambda r: r["n"])
        if rs:
            ax.plot([r["n"] for r in rs], [_time(r) for r in rs], "o-", label=rs[0].get("label", m))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cortex vertices n")
    ax.set_ylabel("time per call (s, warm median)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("time against mesh size")
    fig.tight_layout()
    p = out / "scaling.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
