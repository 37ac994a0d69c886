"""Tests of surfmap.plotting: error branches, colour limits, the zoom inset of the area histogram."""

from __future__ import annotations

import numpy as np
import pytest

from surfmap import flatten
from surfmap.exceptions import ParameterError
from surfmap.plotting import (
    face_distortion,
    plot_distortion_histograms,
    plot_flatmap,
    plot_images,
    save_figure,
)


@pytest.fixture
def hemi_map(meshes):
    mesh = meshes.hemisphere(4, 16)
    return flatten(mesh, np.ones(mesh.n_vertices, dtype=bool), method="area"), mesh


def test_plot_images_bad_shape():
    with pytest.raises(ParameterError, match=r"images: expected shape \(C, size, size\); found \(2, 3, 4, 5\)"):
        plot_images(np.zeros((2, 3, 4, 5)))


def test_plot_images_channel_count():
    with pytest.raises(ParameterError, match="channels: expected 2 names .* found 1"):
        plot_images(np.zeros((2, 8, 8)), ["a"])


def test_plot_images_signed_metric_centred_on_zero(tmp_path):
    img = np.linspace(-1.0, 3.0, 64).reshape(1, 8, 8)
    fig = plot_images(img, ["sulc"], units={"sulc": "mm"})
    lo, hi = fig.axes[0].images[0].get_clim()
    assert lo == -hi and hi == pytest.approx(np.percentile(img, 99))
    assert fig.axes[1].get_ylabel() == "sulc (mm)"  # the colour bar
    assert save_figure(fig, tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_flatmap_values_of_wrong_length(hemi_map):
    fm, _ = hemi_map
    with pytest.raises(ParameterError, match=f"values: expected {fm.n_vertices} .* found 5"):
        plot_flatmap(fm, np.zeros(5))


def test_face_distortion_keys_and_shapes(hemi_map):
    fm, mesh = hemi_map
    d = face_distortion(fm, mesh)
    assert d["log_area_ratio"].shape == d["dilatation"].shape == (len(fm.faces),)
    assert (d["dilatation"] >= 1.0 - 1e-12).all()


def test_plot_distortion_histograms_inset_only_for_a_narrow_map():
    rng = np.random.default_rng(0)
    wide = {"log_area_ratio": rng.normal(0, 1.0, 500), "dilatation": 1 + rng.random(500)}
    narrow = {"log_area_ratio": rng.normal(0, 0.01, 500), "dilatation": 1 + rng.random(500)}
    fig = plot_distortion_histograms({"wide": wide, "narrow": narrow})
    assert len(fig.axes[0].child_axes) == 1
    assert fig.axes[0].child_axes[0].get_xlim()[1] < 0.1
    fig = plot_distortion_histograms({"wide": wide, "also wide": wide})
    assert fig.axes[0].child_axes == []
