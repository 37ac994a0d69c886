import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nibabel.affines import apply_affine

from learn.cv import check_disjoint
from learn.volumetric.config import CVConfig, DataConfig, TrainConfig, VolumetricConfig, resolve
from learn.volumetric.data import check_grid, read_cohort
from learn.volumetric.synthetic import (
    hippocampus_map,
    load_gm_template,
    make_synthetic_cohort,
    synthetic_grid,
)
from learn.volumetric.train import make_splits


@pytest.fixture(scope="module")
def cohort_csv(synthetic_cohort):
    return synthetic_cohort  # conftest: 6 sites x (12 AD/NC + 2 MCI), seed 0, effect 3


def test_synthetic_grid_shapes():
    assert synthetic_grid(3.0)[0] == (48, 60, 43)
    assert synthetic_grid(1.5)[0] == (96, 120, 86)
    np.testing.assert_allclose(synthetic_grid(3.0)[1][:3, 3], [-72.0, -106.5, -48.0])


def test_hippocampus_map_peaks_at_mni_coordinates():
    shape, aff = synthetic_grid(3.0)
    H = hippocampus_map(shape, aff)
    # flipping x in the affine must move the peaks with it
    flip = aff.copy()
    flip[0, 0], flip[0, 3] = -3.0, 69.0
    for A in (aff, flip):
        H = hippocampus_map(shape, A)
        for c in ((-25, -20, -15), (25, -20, -15)):
            ijk = np.round(apply_affine(np.linalg.inv(A), c)).astype(int)
            win = H[ijk[0] - 2:ijk[0] + 3, ijk[1] - 2:ijk[1] + 3, ijk[2] - 2:ijk[2] + 3]
            assert H[tuple(ijk)] == pytest.approx(win.max())
            assert H[tuple(ijk)] > 0.9


def test_synthetic_cohort_is_labelled_and_planted(cohort_csv):
    df = pd.read_csv(cohort_csv)
    assert cohort_csv.name.startswith("SYNTHETIC_")
    assert df["synthetic"].all() and df["site"].str.startswith("SYNTHETIC_").all()
    assert df["gmd_path"].str.contains("SYNTHETIC_").all()
    assert set(df["diagnosis"]) == {"AD", "NC", "pMCI", "sMCI"}
    assert df.loc[df.diagnosis.str.contains("MCI"), "label"].isna().all()
    co = read_cohort(cohort_csv)
    shape, aff = check_grid(co, reference=cohort_csv.parent / "SYNTHETIC_mask.nii.gz")
    assert shape == (48, 60, 43)
    # planted atrophy: mean GMD inside the hippocampal blobs falls with severity
    H = hippocampus_map(shape, aff) > 0.5
    hip = np.array([nib.load(p).get_fdata()[H].mean() for p in co["gmd_path"]])
    r = np.corrcoef(hip, co["severity"])[0, 1]
    assert r < -0.8
    # MMSE tracks severity
    assert np.corrcoef(co["mmse"], co["severity"])[0, 1] < -0.8
    # deterministic: the same call writes the same volumes
    again = make_synthetic_cohort(cohort_csv.parent / "again", n_sites=1, n_per_site=12, n_mci_per_site=2,
                                  seed=0, qc_fraction=0.0, effect=3.0, cache_dir=cohort_csv.parent)
    a = nib.load(read_cohort(again)["gmd_path"][0]).get_fdata()
    np.testing.assert_array_equal(a, nib.load(co["gmd_path"][0]).get_fdata())


def test_template_is_cached(tmp_path):
    t1, _ = load_gm_template(3.0, tmp_path)
    assert (tmp_path / "SYNTHETIC_mni152_gm_3mm.npy").is_file()
    t2, _ = load_gm_template(3.0, tmp_path)
    np.testing.assert_array_equal(t1, t2)
    assert 0.0 <= t1.min() and t1.max() <= 1.0 and (t1 > 0.2).mean() > 0.2


@pytest.mark.parametrize("scheme,col", [("leave-sites-out", "site"), ("leave-datasets-out", "dataset"),
                                        ("leave-one-site-out", "site")])
def test_make_splits_never_share_subject_site_or_dataset(cohort_csv, scheme, col):
    co = read_cohort(cohort_csv)
    cfg = resolve(VolumetricConfig(data=DataConfig(cohort=str(cohort_csv)),
                                   cv=CVConfig(scheme=scheme, n_splits=2), train=TrainConfig()))
    rows = np.flatnonzero(co["label"].notna().to_numpy())
    splits = make_splits(co, rows, cfg)
    tested = np.concatenate([te for _, te in splits])
    assert sorted(tested) == sorted(rows)
    for tr, te in splits:
        for c in ("subject", "site", "dataset") if col == "dataset" else ("subject", "site"):
            check_disjoint(tr, te, co[c].to_numpy(), what=c)
