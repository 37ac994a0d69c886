"""Quality control by template correlation (seed 000, Methods "Quality control").

Each scan's Pearson correlation between its GMV map and a grand-mean GMV template inside the mask; per dataset,
scans below ``mean - 2 SD`` of that dataset's correlations are excluded. The template is the mean GMV of a random
sample of ``n_per_group`` scans per dataset (10 in the paper, visually checked there; here drawn at random).
"""

from __future__ import annotations

import logging

import numpy as np

from learn import DataError
from learn.volumetric.data import read_volume_pair

__all__ = ["grand_mean_template", "qc_exclusions", "run_qc", "template_correlations"]

log = logging.getLogger(__name__)


def _gmv(row, mask):
    return read_volume_pair(row["gmd_path"], row["gmv_path"], mask)[1]


def grand_mean_template(cohort, mask, *, n_per_group: int = 10, group: str = "dataset", seed: int = 0) -> np.ndarray:
    """Mean GMV map of ``n_per_group`` randomly chosen scans per ``group`` (all scans of smaller groups).

    Returns
    -------
    (X, Y, Z) float64
    """
    if group not in cohort.columns:
        raise DataError(f"cannot build the QC template per {group!r}: the cohort table has no such column")
    rng = np.random.default_rng(seed)
    total, n = None, 0
    for _, sub in cohort.groupby(group, sort=True):
        idx = rng.choice(len(sub), size=min(n_per_group, len(sub)), replace=False)
        for i in np.sort(idx):
            v = _gmv(sub.iloc[i], mask).astype(np.float64)
            total = v if total is None else total + v
            n += 1
    if n == 0:
        raise DataError("the cohort table is empty: no scan to build the QC template from")
    return total / n


def template_correlations(cohort, template, mask) -> np.ndarray:
    """Pearson r between each scan's GMV and ``template`` over the voxels inside ``mask``.

    Returns
    -------
    (n_scans,) float64
    """
    mask = np.asarray(mask, dtype=bool)
    if template.shape != mask.shape:
        raise DataError(f"QC template shape {template.shape} differs from the mask shape {mask.shape}")
    t = template[mask]
    t = (t - t.mean()) / max(t.std(), 1e-12)
    r = np.empty(len(cohort))
    for i in range(len(cohort)):
        v = _gmv(cohort.iloc[i], mask)[mask].astype(np.float64)
        sd = v.std()
        r[i] = 0.0 if sd == 0 else float(np.mean((v - v.mean()) / sd * t))
    return r


def qc_exclusions(cohort, r, *, group: str = "dataset", n_sd: float = 2.0, min_group_size: int = 3):
    """Flag scans with ``r < mean - n_sd * SD`` of their group's correlations.

    Returns
    -------
    pandas.DataFrame
        subject, session (if present), group, ``qc_corr``, ``qc_threshold``, ``qc_excluded``, ``qc_reason``.

    Raises
    ------
    DataError
        A group with fewer than ``min_group_size`` scans (its SD is meaningless), or a length mismatch.
    """

    r = np.asarray(r, dtype=np.float64)
    if r.shape != (len(cohort),):
        raise DataError(f"{r.shape[0]} correlations for {len(cohort)} scans")
    if group not in cohort.columns:
        raise DataError(f"cannot apply QC per {group!r}: the cohort table has no such column")
    cols = [c for c in ("subject", "session", group) if c in cohort.columns]
    out = cohort[cols].copy()
    out["qc_corr"] = r
    out["qc_threshold"] = np.nan
    for g, idx in out.groupby(group).groups.items():
        if len(idx) < min_group_size:
            raise DataError(f"QC group {group}={g!r} holds {len(idx)} scan(s); at least {min_group_size} are needed "
                            "for a mean - 2 SD threshold (merge small groups or lower min_group_size)")
        vals = out.loc[idx, "qc_corr"]
        out.loc[idx, "qc_threshold"] = vals.mean() - n_sd * vals.std(ddof=1)
    out["qc_excluded"] = out["qc_corr"] < out["qc_threshold"]
    out["qc_reason"] = [
        f"r = {c:.3f} < {group} mean - {n_sd:g} SD = {t:.3f}" if e else ""
        for c, t, e in zip(out["qc_corr"], out["qc_threshold"], out["qc_excluded"])
    ]
    log.info("QC: %d of %d scans excluded", int(out["qc_excluded"].sum()), len(out))
    return out


def run_qc(cohort, mask, *, group: str = "dataset", n_per_group: int = 10, n_sd: float = 2.0, seed: int = 0):
    """Template, correlations and exclusions in one call; returns (report DataFrame, template)."""
    template = grand_mean_template(cohort, mask, n_per_group=n_per_group, group=group, seed=seed)
    r = template_correlations(cohort, template, mask)
    return qc_exclusions(cohort, r, group=group, n_sd=n_sd), template
