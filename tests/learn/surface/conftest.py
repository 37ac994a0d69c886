"""Fixtures for the surface learning tests: tiny SYNTHETIC cohorts on a flat grid template.

Torch runs on one thread here: the tiny models gain nothing from a second one and, on a shared
2-core machine, two threads per process slow them down several times.
"""

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from learn.surface import synthetic as S
from learn.surface.dataset import SurfaceImageDataset


def grid_dataset(n_subjects=80, effect_size=2.5, seed=0, grid_size=24):
    """Images (N, 1, 24, 24) of a SYNTHETIC sex cohort with a strong effect in 2 regions of thickness."""
    cohort = S.hcp_like_cohort(
        n_subjects, template="grid", hemis=("left",), metrics=("thickness",), effect_size=effect_size,
        n_regions=2, radius_mm=15.0, grid_size=grid_size, fwhm_mm=8.0, seed=seed,
    )
    images, channels = cohort.images(S.template_rasterizers(cohort, size=grid_size))
    return cohort, SurfaceImageDataset.from_arrays(images, cohort.table, channels)


@pytest.fixture(scope="session")
def strong_grid():
    return grid_dataset()


@pytest.fixture(autouse=True, scope="session")
def _eigenmode_cache(tmp_path_factory):
    """Keep the eigenmode disk cache of these tests out of the user's home."""
    import os

    old = os.environ.get("SURFMAP_CACHE_DIR")
    os.environ["SURFMAP_CACHE_DIR"] = str(tmp_path_factory.mktemp("surfmap-cache"))
    yield
    if old is None:
        os.environ.pop("SURFMAP_CACHE_DIR", None)
    else:
        os.environ["SURFMAP_CACHE_DIR"] = old


@pytest.fixture(autouse=True, scope="package")
def _one_blas_thread():
    """One BLAS / OpenMP thread while these tests run: idle spinning BLAS threads (after eigsh, numba) starve
    torch on a loaded 2-core machine. Restored afterwards for the other packages' tests."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
