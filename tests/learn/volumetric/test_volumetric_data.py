import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from learn import DataError, SplitError
from learn.volumetric.data import (
    VolumeDataset,
    check_grid,
    load_mask,
    read_cohort,
    read_volume_pair,
    resolve_crop,
    validate_split,
)
from surfmap.exceptions import InputFileNotFoundError

AFF = np.diag([3.0, 3.0, 3.0, 1.0])


def _write(path, arr, affine=AFF):
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), affine), path)
    return path.name


def _cohort(tmp_path, n=6, shape=(6, 7, 5)):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        gmd = rng.random(shape)
        gmd[0, 0, 0] = np.nan
        rows.append({"subject": f"s{i}", "session": 1, "site": f"site{i % 3}", "dataset": "D", "label": i % 2,
                     "gmd_path": _write(tmp_path / f"wc1_s{i}.nii", gmd),
                     "gmv_path": _write(tmp_path / f"mwc1_s{i}.nii", 2 * gmd)})
    df = pd.DataFrame(rows)
    df.to_csv(tmp_path / "cohort.csv", index=False)
    return tmp_path / "cohort.csv", df


def test_read_volume_pair_nan_mask_crop(tmp_path):
    csv, _ = _cohort(tmp_path)
    co = read_cohort(csv)
    shape, aff = check_grid(co)
    assert shape == (6, 7, 5)
    np.testing.assert_allclose(aff, AFF)
    mask = np.ones(shape, bool)
    mask[1] = False
    crop = resolve_crop([[0, 4], [1, 7], [0, 5]], shape)
    x = read_volume_pair(co.gmd_path[0], co.gmv_path[0], mask, crop)
    assert x.shape == (2, 4, 6, 5) and x.dtype == np.float32
    raw = nib.load(co.gmd_path[0]).get_fdata()
    np.testing.assert_allclose(x[0, 0], raw[0, 1:7], rtol=1e-6)  # NaN at (0,0,0) is cropped away here
    assert np.all(x[:, 1] == 0)  # masked slab
    np.testing.assert_allclose(x[1], 2 * x[0], rtol=1e-5)
    full = read_volume_pair(co.gmd_path[0], co.gmv_path[0])
    assert full[0, 0, 0, 0] == 0.0  # NaN -> 0


def test_resolve_crop_auto_on_dartel_grid():
    sl = resolve_crop("auto", (121, 145, 121))
    assert sl == (slice(12, 108), slice(13, 133), slice(16, 102))
    assert resolve_crop("auto", (48, 60, 43)) is None
    with pytest.raises(DataError, match="does not fit the grid"):
        resolve_crop([[0, 50], [0, 10], [0, 10]], (48, 60, 43))


def test_volume_dataset_caches_decoded_volumes(tmp_path):
    csv, _ = _cohort(tmp_path)
    co = read_cohort(csv)
    store = {}
    ds = VolumeDataset(co, [1, 2], cache_store=store)
    x, y, rid = ds[0]
    assert tuple(x.shape) == (2, 6, 7, 5) and float(y) == 1.0 and rid == 1
    (tmp_path / "wc1_s1.nii").unlink()  # a cached volume is not re-read
    x2, _, _ = ds[0]
    np.testing.assert_allclose(x2.numpy(), x.numpy(), atol=1e-3)
    dsd = VolumeDataset(co, [2], cache="disk", cache_dir=tmp_path / "cache")
    dsd[0]
    assert (tmp_path / "cache" / "2.npy").is_file()


def test_read_cohort_missing_file(tmp_path):
    csv, df = _cohort(tmp_path)
    (tmp_path / "mwc1_s3.nii").unlink()
    with pytest.raises(InputFileNotFoundError, match=r"1 image file\(s\) do not exist.*mwc1_s3"):
        read_cohort(csv)


def test_read_cohort_labels_not_binary(tmp_path):
    csv, df = _cohort(tmp_path)
    df.loc[2, "label"] = 2
    df.to_csv(csv, index=False)
    with pytest.raises(DataError, match="binary labels 0/1"):
        read_cohort(csv)


def test_read_cohort_duplicate_scan(tmp_path):
    csv, df = _cohort(tmp_path)
    pd.concat([df, df.iloc[[0]]]).to_csv(csv, index=False)
    with pytest.raises(DataError, match="repeat a subject/session"):
        read_cohort(csv)


def test_read_cohort_missing_column(tmp_path):
    csv, df = _cohort(tmp_path)
    df.drop(columns=["gmv_path"]).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['gmv_path'\]"):
        read_cohort(csv)


def test_check_grid_wrong_shape(tmp_path):
    csv, df = _cohort(tmp_path)
    _write(tmp_path / "mwc1_s4.nii", np.zeros((6, 7, 6)))
    with pytest.raises(DataError, match=r"mwc1_s4.nii' has shape \(6, 7, 6\); expected \(6, 7, 5\)"):
        check_grid(read_cohort(csv))


def test_check_grid_wrong_affine(tmp_path):
    csv, df = _cohort(tmp_path)
    aff = AFF.copy()
    aff[0, 3] = 10.0
    _write(tmp_path / "wc1_s5.nii", np.zeros((6, 7, 5)), aff)
    with pytest.raises(DataError, match="wc1_s5.nii' has affine"):
        check_grid(read_cohort(csv))


def test_load_mask_grid_mismatch(tmp_path):
    _write(tmp_path / "mask.nii", np.ones((6, 7, 4)))
    with pytest.raises(DataError, match=r"has shape \(6, 7, 4\); the data grid is \(6, 7, 5\)"):
        load_mask(tmp_path / "mask.nii", (6, 7, 5), AFF)


def test_validate_split_subject_and_site(tmp_path):
    csv, _ = _cohort(tmp_path)
    co = read_cohort(csv)
    validate_split(co, [0, 3], [1, 4], by=("subject", "site"))  # sites 0 / 1: disjoint
    with pytest.raises(SplitError, match=r"1 site\(s\) in both.*site0"):
        validate_split(co, [0, 1], [3], by=("subject", "site"))
    with pytest.raises(SplitError, match=r"subject\(s\) in both.*s2"):
        validate_split(co, [0, 2], [2, 5], by=("subject",))


def test_volume_dataset_rejects_missing_labels(tmp_path):
    csv, df = _cohort(tmp_path)
    df["label"] = df["label"].astype(float)
    df.loc[0, "label"] = np.nan
    df.to_csv(csv, index=False)
    co = read_cohort(csv)
    with pytest.raises(DataError, match="have no 'label' value"):
        VolumeDataset(co, [0, 1])
