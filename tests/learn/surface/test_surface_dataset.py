"""Image dataset over surfmap batch outputs, fold-wise normalisation, clear errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from learn import DataError
from learn.surface.dataset import Normalizer, SurfaceImageDataset, read_manifest
from surfmap.exceptions import InputFileNotFoundError


def _batch_output(root, subjects, hemis=("left", "right"), size=8, failed=()):
    """A folder shaped like `surfmap batch` output: <subj>/<hemi>/images.npz + manifest.tsv."""
    rng = np.random.default_rng(0)
    rows, truth = [], {}
    for s in subjects:
        for h in hemis:
            status = "failed" if (s, h) in failed else "done"
            rel = f"{s}/{h}/images.npz"
            if status == "done":
                img = rng.standard_normal((3, size, size)).astype(np.float32)
                (root / s / h).mkdir(parents=True)
                np.savez(root / rel, images=img, channels=np.array(["thickness", "sulc", "curv"]))
                truth[(s, h)] = img
            rows.append(dict(subject=s, hemi=h, status=status, images=rel if status == "done" else "",
                             channels="thickness,sulc,curv" if status == "done" else "", message=""))
    pd.DataFrame(rows).to_csv(root / "manifest.tsv", sep="\t", index=False)
    return root / "manifest.tsv", truth


def _table(subjects, labels, sites=None):
    return pd.DataFrame({"subject": subjects, "label": labels,
                         "site": sites if sites is not None else ["A"] * len(subjects)})


def test_normalizer_statistics_from_training_images_only():
    rng = np.random.default_rng(1)
    images = rng.normal(2.0, 3.0, size=(20, 2, 6, 6)).astype(np.float32)
    train, test = np.arange(12), np.arange(12, 20)
    images[test] = 1e6  # poisoned: any leak of a test image would show in the statistics
    for mode in ("channel", "pixel"):
        norm = Normalizer(mode).fit(images, train)
        ref = images[train].astype(np.float64)
        axes = (0, 2, 3) if mode == "channel" else (0,)
        np.testing.assert_allclose(norm.mean_.squeeze(), ref.mean(axis=axes).squeeze(), rtol=1e-5)
        np.testing.assert_allclose(norm.std_.squeeze(), ref.std(axis=axes).squeeze(), rtol=1e-4)
        z = norm.transform(images[train])
        np.testing.assert_allclose(z.mean(axis=axes), 0.0, atol=1e-4)
        assert norm.n_fit_ == 12


def test_normalizer_unfitted_and_bad_mode():
    with pytest.raises(DataError, match="not fitted"):
        Normalizer().transform(np.zeros((1, 2, 2)))
    with pytest.raises(DataError, match="'channel', 'pixel' or 'none'"):
        Normalizer("imagenet")


def test_from_manifest_reads_batch_layout(tmp_path):
    subjects = ["s1", "s2", "s3", "s4"]
    manifest, truth = _batch_output(tmp_path, subjects)
    table = _table(subjects[::-1], [1, 0, 1, 0], ["A", "A", "B", "B"])
    table.to_csv(tmp_path / "cohort.csv", index=False)
    ds = SurfaceImageDataset.from_manifest(manifest, tmp_path / "cohort.csv", metrics=["sulc", "thickness"])
    assert ds.channels == ["left_sulc", "left_thickness", "right_sulc", "right_thickness"]
    assert ds.subjects.tolist() == ["s4", "s3", "s2", "s1"]  # table order
    assert ds.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(ds.images[0, 0], truth[("s4", "left")][1])
    np.testing.assert_array_equal(ds.images[2, 3], truth[("s2", "right")][0])
    x, y = ds[1]
    assert isinstance(x, torch.Tensor) and x.shape == (4, 8, 8) and float(y) == 0.0
    one = ds.select("right_thickness")
    assert one.images.shape == (4, 1, 8, 8)


def test_from_manifest_missing_images_error_and_drop(tmp_path):
    manifest, _ = _batch_output(tmp_path, ["s1", "s2", "s3"], failed={("s2", "right")})
    table = _table(["s1", "s2", "s3"], [0, 1, 1])
    with pytest.raises(DataError, match=r"have no images in the manifest: \['s2 right \(failed\)'\]"):
        SurfaceImageDataset.from_manifest(manifest, table)
    ds = SurfaceImageDataset.from_manifest(manifest, table, on_missing="drop")
    assert ds.subjects.tolist() == ["s1", "s3"]


def test_from_manifest_subject_not_in_manifest(tmp_path):
    manifest, _ = _batch_output(tmp_path, ["s1", "s2"])
    with pytest.raises(DataError, match=r"'s9 left \(not in manifest\)'"):
        SurfaceImageDataset.from_manifest(manifest, _table(["s1", "s9"], [0, 1]))


def test_from_manifest_unknown_requested_subjects(tmp_path):
    manifest, _ = _batch_output(tmp_path, ["s1", "s2"])
    with pytest.raises(DataError, match="not in the cohort table"):
        SurfaceImageDataset.from_manifest(manifest, _table(["s1", "s2"], [0, 1]), subjects=["s1", "zz"])


def test_from_manifest_labels_not_binary(tmp_path):
    manifest, _ = _batch_output(tmp_path, ["s1", "s2", "s3"])
    with pytest.raises(DataError, match="should hold binary labels 0/1; found values"):
        SurfaceImageDataset.from_manifest(manifest, _table(["s1", "s2", "s3"], [0, 1, 2]))
    with pytest.raises(DataError, match="binary labels"):
        SurfaceImageDataset.from_manifest(manifest, _table(["s1", "s2", "s3"], ["ASD", "TD", "ASD"]))


def test_from_manifest_missing_metric(tmp_path):
    manifest, _ = _batch_output(tmp_path, ["s1", "s2"])
    with pytest.raises(DataError, match=r"metric\(s\) \['myelin'\] are missing"):
        SurfaceImageDataset.from_manifest(manifest, _table(["s1", "s2"], [0, 1]), metrics=["myelin"])


def test_from_manifest_missing_files(tmp_path):
    with pytest.raises(InputFileNotFoundError, match="run `surfmap batch` first"):
        read_manifest(tmp_path / "manifest.tsv")
    manifest, _ = _batch_output(tmp_path, ["s1", "s2"])
    (tmp_path / "s2" / "left" / "images.npz").unlink()
    with pytest.raises(InputFileNotFoundError, match="images.npz' does not exist"):
        SurfaceImageDataset.from_manifest(manifest, _table(["s1", "s2"], [0, 1]))


def test_dataset_rejects_nan_images_and_duplicates():
    img = np.zeros((2, 1, 4, 4), np.float32)
    img[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="hold NaN/inf"):
        SurfaceImageDataset(img, [0, 1], ["a", "b"], ["left_thickness"])
    with pytest.raises(DataError, match="subjects should be unique"):
        SurfaceImageDataset(np.zeros((2, 1, 4, 4)), [0, 1], ["a", "a"], ["left_thickness"])
