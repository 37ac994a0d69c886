import pytest

from learn.volumetric.synthetic import make_synthetic_cohort


@pytest.fixture(scope="session")
def synthetic_cohort(tmp_path_factory):
    """SYNTHETIC cohort, 6 sites x (12 AD/NC + 2 MCI), 3 mm grid, strong planted atrophy (effect 3)."""
    d = tmp_path_factory.mktemp("SYNTHETIC_cohort")
    csv = make_synthetic_cohort(d, n_sites=6, n_per_site=12, n_mci_per_site=2, seed=0, qc_fraction=0.0,
                                effect=3.0, cache_dir=tmp_path_factory.getbasetemp())
    return csv


@pytest.fixture(scope="session")
def template_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp()
