"""Images of different maps never share a network: the geometry that ``surfmap batch`` records is checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from learn import DataError
from learn.surface.dataset import SurfaceImageDataset
from learn.surface.transfer import _check_same_geometry


def _cohort(root, subjects, geometry, size=8):
    """`surfmap batch`-shaped output whose images.npz record ``geometry(subject)`` (None: no key)."""
    rng = np.random.default_rng(0)
    rows = []
    for s in subjects:
        (root / s / "left").mkdir(parents=True)
        extra = {} if geometry(s) is None else {"geometry": np.array(geometry(s))}
        np.savez(root / s / "left" / "images.npz", images=rng.standard_normal((1, size, size)).astype(np.float32),
                 channels=np.array(["thickness"]), **extra)
        rows.append(dict(subject=s, hemi="left", status="done", images=f"{s}/left/images.npz"))
    pd.DataFrame(rows).to_csv(root / "manifest.tsv", sep="\t", index=False)
    table = pd.DataFrame({"subject": subjects, "label": [0, 1] * (len(subjects) // 2), "site": "A"})
    return SurfaceImageDataset.from_manifest(root / "manifest.tsv", table, hemis=("left",))


def test_dataset_records_the_shared_geometry(tmp_path):
    ds = _cohort(tmp_path, ["a", "b"], lambda s: "template:abc")
    assert ds.geometry == {"left": "template:abc"}
    assert ds.select("left_thickness").geometry == ds.geometry
    assert _cohort(tmp_path / "old", ["a", "b"], lambda s: None).geometry is None  # files of older surfmap


def test_dataset_refuses_images_of_different_maps(tmp_path):
    with pytest.raises(DataError, match=r"subject 'b'.*geometry 'template:222'.*--resample fslr32k"):
        _cohort(tmp_path, ["a", "b"], lambda s: "template:111" if s == "a" else "template:222")
    with pytest.raises(DataError, match="different places of the cortex"):
        _cohort(tmp_path / "mixed", ["a", "b"], lambda s: "template:111" if s == "a" else "native")


@pytest.mark.parametrize("src, dst, ok", [
    ("template:111", "template:111", True),
    ("template:111", "template:222", False),
    ("native", "native", False),
    ("template:111", None, True),  # unknown: nothing to check
])
def test_transfer_refuses_cohorts_of_different_maps(tmp_path, src, dst, ok):
    a = _cohort(tmp_path / "src", ["a", "b"], lambda s: src)
    b = _cohort(tmp_path / "dst", ["c", "d"], lambda s: dst)
    if ok:
        _check_same_geometry(a, b)
    else:
        with pytest.raises(DataError, match=r"source and target left images come from .*Fix: re-run `surfmap batch`"):
            _check_same_geometry(a, b)
