"""SYNTHETIC grey-matter cohort with planted, known effects (VOLUMETRIC.md §6); no download, CPU only.

Everything produced here is labelled synthetic: file names start with ``SYNTHETIC_``, dataset and site names
start with ``SYNTHETIC_``, the cohort table has a ``synthetic`` column set to True, and log messages say so.
It tests that the pipeline can find effects that are known to be there; it says nothing about real brains.

Built from nilearn's bundled MNI152 grey-matter template (1 mm, in the wheel), resampled to a grid covering the
field of view of the real 96x120x86 crop: 3 mm -> 48x60x43 (tests), 1.5 mm -> 96x120x86 (shape checks only).

Per subject (deterministic from ``(seed, site, subject)``):

- GMD = T * (1 + eps) * (1 - 0.35 a H) * (1 +- 0.08 B) * age term, eps smooth noise (SD 0.05), clipped to
  [0, 1]; ``a`` = AD severity, ``H`` = two Gaussians (sigma 6 mm) at MNI (+-25, -20, -15) (hippocampi), ``B`` =
  sex blobs at (+-40, 20, 35) (+ for males, - for females).
- GMV = GMD * h * (1 + 0.05 smooth field) * (1 - 0.15 a H), head size h ~ N(1, 0.08) + 0.07 for males.
- Site: gain U(0.9, 1.1), offset U(-0.02, 0.02) in the mask, extra smoothing sigma in {0, 0.5, 1} voxel, a linear
  bias field along z; AD prevalence 20-60% per site (site is a confound).
- Clinical: NC a ~ U(0, 0.1), AD a ~ U(0.6, 1), pMCI a ~ U(0.3, 0.7), sMCI a ~ U(0, 0.25);
  MMSE = round(29 - 12 a + N(0, 1.5)) clipped to [0, 30].
- QC outliers (about 3%): both maps rolled by +-5 voxels along y, or replaced by smoothed noise.
- Mask: template > 0.2 (stands in for GreyMask_02); both channels are multiplied by it.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine
from scipy.ndimage import gaussian_filter

__all__ = [
    "HIPPOCAMPUS_MNI",
    "SEX_BLOB_MNI",
    "SyntheticSubject",
    "hippocampus_map",
    "load_gm_template",
    "make_subject",
    "make_synthetic_cohort",
    "synthetic_grid",
]

log = logging.getLogger(__name__)

HIPPOCAMPUS_MNI = ((-25.0, -20.0, -15.0), (25.0, -20.0, -15.0))
SEX_BLOB_MNI = ((-40.0, 20.0, 35.0), (40.0, 20.0, 35.0))
_ORIGIN = (-72.0, -106.5, -48.0)
_FOV = (144.0, 180.0, 129.0)


def synthetic_grid(spacing: float = 3.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the synthetic grid: 3 mm -> 48x60x43, 1.5 mm -> 96x120x86 (the real crop's FOV)."""
    if spacing <= 0:
        raise ValueError(f"'spacing' should be positive (mm); {spacing!r} was provided")
    shape = tuple(int(round(f / spacing)) for f in _FOV)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = _ORIGIN
    return shape, affine


def load_gm_template(spacing: float = 3.0, cache_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """nilearn's MNI152 GM template resampled to the synthetic grid (cached as .npy in ``cache_dir``).

    Returns
    -------
    template : (X, Y, Z) float32 in [0, 1]
    affine : (4, 4) float64
    """
    shape, affine = synthetic_grid(spacing)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"SYNTHETIC_mni152_gm_{spacing:g}mm.npy"
        if cache.is_file():
            return np.load(cache), affine
    from nilearn.datasets import load_mni152_gm_template
    from nilearn.image import resample_img

    img = load_mni152_gm_template()
    res = resample_img(img, target_affine=affine, target_shape=shape, interpolation="continuous",
                       force_resample=True, copy_header=True)
    t = np.clip(np.nan_to_num(np.asarray(res.get_fdata(), dtype=np.float32)), 0.0, 1.0)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, t)
    return t, affine


def _gaussians(shape, affine, centres, sigma_mm: float) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = apply_affine(affine, ijk)
    out = np.zeros(xyz.shape[0])
    for c in centres:
        d2 = np.sum((xyz - np.asarray(c)) ** 2, axis=1)
        out += np.exp(-0.5 * d2 / sigma_mm**2)
    return out.reshape(shape).astype(np.float32)


def hippocampus_map(shape, affine, sigma_mm: float = 6.0) -> np.ndarray:
    """H: sum of two Gaussians at MNI (+-25, -20, -15) mm (peak 1), on any grid (x-flips handled)."""
    return _gaussians(shape, affine, HIPPOCAMPUS_MNI, sigma_mm)


@dataclass(frozen=True)
class SyntheticSubject:
    """Planted truth of one SYNTHETIC subject."""

    subject: str
    site: int
    diagnosis: str  # "NC", "AD", "pMCI", "sMCI"
    severity: float
    sex: int  # 1 male, 0 female
    age: float
    head_size: float
    mmse: int
    qc_outlier: str  # "", "roll", "noise"


def _site_params(seed: int, site: int, site_effects: float = 1.0) -> dict:
    """Scanner effects of one site; ``site_effects`` scales them (0 = identical sites, 1 = §6)."""
    rng = np.random.default_rng([seed, 7919, site])
    p = {
        "gain": rng.uniform(0.9, 1.1),
        "offset": rng.uniform(-0.02, 0.02),
        "smooth": [0.0, 0.5, 1.0][site % 3],
        "bias": rng.uniform(-0.05, 0.05),
        "prevalence": 0.2 + 0.4 * ((site * 0.61803) % 1.0),
    }
    if site_effects != 1.0:
        k = float(site_effects)
        p.update(gain=1.0 + k * (p["gain"] - 1.0), offset=k * p["offset"], smooth=k * p["smooth"],
                 bias=k * p["bias"])
    return p


def make_subject(template, mask, affine, H, B, truth: SyntheticSubject, site: dict, seed: int,
                 effect: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """GMD and GMV maps (float32, masked) of one SYNTHETIC subject with the planted effects of ``truth``."""
    rng = np.random.default_rng([seed, truth.site, zlib.crc32(truth.subject.encode())])
    shape = template.shape
    eps = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    eps *= 0.05 / max(float(eps.std()), 1e-8)
    a = truth.severity
    sexsign = 1.0 if truth.sex == 1 else -1.0
    age_term = 1.0 - 0.003 * (truth.age - 73.0)
    gmd = template * (1 + eps) * (1 - 0.35 * effect * a * H) * (1 + 0.08 * sexsign * B) * age_term
    gmd = np.clip(gmd, 0.0, 1.0)
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), 4.0)
    field *= 1.0 / max(float(field.std()), 1e-8)
    gmv = gmd * truth.head_size * (1 + 0.05 * field) * (1 - 0.15 * effect * a * H)
    z = np.linspace(-1.0, 1.0, shape[2], dtype=np.float32)[None, None, :]
    out = []
    for vol in (gmd, gmv):
        if site["smooth"] > 0:
            vol = gaussian_filter(vol, site["smooth"])
        vol = (vol * site["gain"] + site["offset"]) * (1 + site["bias"] * z)
        out.append(vol)
    if truth.qc_outlier == "roll":
        shift = 5 if rng.random() < 0.5 else -5
        out = [np.roll(v, shift, axis=1) for v in out]
    elif truth.qc_outlier == "noise":
        noise = np.abs(gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5))
        noise *= 0.5 / max(float(noise.mean()), 1e-8)
        out = [noise, noise * truth.head_size]
    m = mask.astype(np.float32)
    return (np.clip(out[0], 0, None) * m).astype(np.float32), (np.clip(out[1], 0, None) * m).astype(np.float32)


def make_synthetic_cohort(out_dir, *, n_sites: int = 6, n_per_site: int = 40, n_mci_per_site: int = 0,
                          spacing: float = 3.0, seed: int = 0, qc_fraction: float = 0.03, effect: float = 1.0,
                          sites_per_dataset: int = 2, site_effects: float = 1.0, cache_dir=None,
                          progress: bool = False) -> Path:
    """Write a SYNTHETIC cohort: NIfTI GMD/GMV pairs, a mask and ``SYNTHETIC_cohort.csv``.

    Parameters
    ----------
    out_dir : path
        Created if needed; images go to ``out_dir/SYNTHETIC_gm/``.
    n_sites, n_per_site : int
        AD/NC subjects per site (AD share varies by site, 20-60%).
    n_mci_per_site : int
        Extra MCI subjects per site (half progressive, half stable); their ``label`` is empty.
    spacing : float
        3.0 (48x60x43) for tests; 1.5 (96x120x86) for shape checks.
    seed : int
        0 names subjects ``SYNTHETIC_S00_000``, sites ``SYNTHETIC_S00`` and datasets ``SYNTHETIC_D00``; any other
        seed ``SYNTHETIC_R<seed>_S00_000`` etc., so that cohorts made with different seeds never share a subject.
    qc_fraction : float
        Share of scans corrupted (planted QC outliers, column ``qc_outlier``).
    effect : float
        Multiplier of the planted atrophy (1.0 = VOLUMETRIC.md §6).
    sites_per_dataset : int
        Sites grouped into SYNTHETIC datasets (for leave-datasets-out).
    site_effects : float
        Multiplier of the scanner effects (gain, offset, smoothing, bias field); 1.0 = VOLUMETRIC.md §6, 0.0 =
        identical scanners (AD prevalence still differs by site).

    Returns
    -------
    Path
        The cohort CSV. Columns: subject, session, dataset, site, label (1 AD / 0 NC / empty for MCI), sex,
        age, mmse, diagnosis, severity, head_size, qc_outlier, field_strength (odd sites "3T", even "1.5T"; a
        label only, no planted effect), gmd_path, gmv_path (relative to the CSV), synthetic.
    """
    import pandas as pd

    if not site_effects >= 0:
        raise ValueError(f"'site_effects' should be >= 0 (0 = identical scanners, 1 = default); "
                         f"{site_effects!r} was provided")
    out_dir = Path(out_dir)
    img_dir = out_dir / "SYNTHETIC_gm"
    img_dir.mkdir(parents=True, exist_ok=True)
    template, affine = load_gm_template(spacing, cache_dir)
    mask = template > 0.2
    H = hippocampus_map(template.shape, affine)
    B = _gaussians(template.shape, affine, SEX_BLOB_MNI, 8.0)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), out_dir / "SYNTHETIC_mask.nii.gz")
    nib.save(nib.Nifti1Image(template.astype(np.float32), affine), out_dir / "SYNTHETIC_template.nii.gz")
    log.info("writing a SYNTHETIC cohort (%d sites x %d subjects, %g mm) to %s", n_sites, n_per_site, spacing,
             out_dir)
    rows = []
    rng = np.random.default_rng([seed, 1])
    tag = "SYNTHETIC_" if seed == 0 else f"SYNTHETIC_R{seed}_"  # distinct subjects, sites, datasets per seed
    for s in range(n_sites):
        sp = _site_params(seed, s, site_effects)
        n_ad = int(round(sp["prevalence"] * n_per_site))
        diags = ["AD"] * n_ad + ["NC"] * (n_per_site - n_ad)
        diags += ["pMCI", "sMCI"] * (n_mci_per_site // 2) + ["sMCI"] * (n_mci_per_site % 2)
        rng.shuffle(diags)
        for k, dx in enumerate(diags):
            lo, hi = {"NC": (0.0, 0.1), "AD": (0.6, 1.0), "pMCI": (0.3, 0.7), "sMCI": (0.0, 0.25)}[dx]
            a = float(rng.uniform(lo, hi))
            sex = int(rng.random() < 0.5)
            age = float(np.clip(rng.normal(73 + 4 * a, 6), 55, 95))
            h = float(rng.normal(1.0, 0.08) + 0.07 * sex)
            mmse = int(np.clip(round(29 - 12 * a + rng.normal(0, 1.5)), 0, 30))
            u = rng.random()
            qc = "" if u >= qc_fraction else ("roll" if u < qc_fraction / 2 else "noise")
            subj = f"SYNTHETIC_S{s:02d}_{k:03d}"
            truth = SyntheticSubject(subj, s, dx, a, sex, age, h, mmse, qc)
            subj = subj.replace("SYNTHETIC_", tag)
            gmd, gmv = make_subject(template, mask, affine, H, B, truth, sp, seed, effect)
            paths = []
            for kind, vol in (("wc1", gmd), ("mwc1", gmv)):
                img = nib.Nifti1Image(vol, affine)
                img.set_data_dtype(np.int16)  # scaled int16: half the disk of float32, ~1e-4 precision
                p = img_dir / f"{kind}_{subj}.nii"
                nib.save(img, p)
                paths.append(p.relative_to(out_dir).as_posix())
            rows.append({
                "subject": subj, "session": 1, "dataset": f"{tag}D{s // sites_per_dataset:02d}",
                "site": f"{tag}S{s:02d}", "label": {"AD": 1, "NC": 0}.get(dx, np.nan), "sex": sex,
                "age": round(age, 1), "mmse": mmse, "diagnosis": dx, "severity": round(a, 4),
                "head_size": round(h, 4), "qc_outlier": qc, "field_strength": "3T" if s % 2 else "1.5T",
                "gmd_path": paths[0], "gmv_path": paths[1],
                "synthetic": True,
            })
    df = pd.DataFrame(rows)
    df["label"] = df["label"].astype("Int64")
    csv = out_dir / "SYNTHETIC_cohort.csv"
    df.to_csv(csv, index=False)
    log.info("SYNTHETIC cohort: %d scans, %d AD, %d NC, %d MCI, %d planted QC outliers", len(df),
             int((df.diagnosis == "AD").sum()), int((df.diagnosis == "NC").sum()),
             int(df.diagnosis.str.contains("MCI").sum()), int((df.qc_outlier != "").sum()))
    return csv
