import pytest

from learn.volumetric.synthetic import make_synthetic_cohort


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory):
    """SYNTHETIC cohort, 4 sites x 16 AD/NC + 4 MCI per site, 3 mm grid, strong planted atrophy (effect 3)."""
    d = tmp_path_factory.mktemp("SYNTHETIC_cohort")
    csv = make_synthetic_cohort(d, n_sites=4, n_per_site=16, n_mci_per_site=4, seed=0, qc_fraction=0.0,
                                effect=3.0, cache_dir=tmp_path_factory.getbasetemp())
    return csv


@pytest.fixture(scope="session")
def template_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp()
