import numpy as np
import pytest

from learn import SplitError
from learn.cv import (
    check_disjoint,
    leave_groups_out,
    leave_one_group_out,
    stratified_group_kfold,
    validation_split,
)


def _cohort(n=300, seed=0):
    rng = np.random.default_rng(seed)
    site = rng.integers(0, 12, n)
    subject = rng.integers(0, 120, n)  # repeated scans
    # a subject always belongs to one site
    site = subject % 12
    y = rng.integers(0, 2, n)
    return y, site, subject


def test_leave_groups_out_partitions_and_never_shares_a_site():
    y, site, _ = _cohort()
    seen = np.zeros(site.shape[0], dtype=int)
    folds = list(leave_groups_out(site, n_splits=5, seed=1))
    assert len(folds) == 5
    for train, test in folds:
        assert set(site[train]).isdisjoint(site[test])
        assert train.shape[0] + test.shape[0] == site.shape[0]
        check_disjoint(train, test, site)
        seen[test] += 1
    np.testing.assert_array_equal(seen, 1)


def test_leave_groups_out_always_train():
    _, site, _ = _cohort()
    for train, test in leave_groups_out(site, n_splits=3, seed=0, always_train=[0, 1]):
        assert not np.isin(site[test], [0, 1]).any()
        assert np.isin([0, 1], site[train]).all()


def test_leave_groups_out_too_few_groups():
    with pytest.raises(SplitError, match="testable groups"):
        list(leave_groups_out([0, 0, 1, 1], n_splits=3))


def test_stratified_group_kfold_never_shares_a_subject():
    y, _, subject = _cohort()
    for train, test in stratified_group_kfold(y, subject, n_splits=10, seed=0):
        assert set(subject[train]).isdisjoint(subject[test])


def test_leave_one_group_out_each_group_once():
    _, site, _ = _cohort()
    folds = list(leave_one_group_out(site))
    assert len(folds) == 12
    for train, test in folds:
        assert np.unique(site[test]).shape[0] == 1
        assert site[test][0] not in set(site[train])


def test_validation_split_sizes_and_groups():
    _, _, subject = _cohort()
    idx = np.arange(0, 300, 2)
    fit, val = validation_split(idx, 30, seed=0)
    assert val.shape[0] == 30 and fit.shape[0] == 120
    assert set(fit).isdisjoint(val) and set(fit) | set(val) == set(idx)
    fit, val = validation_split(idx, fraction=0.25, seed=0, groups=subject)
    assert val.shape[0] >= round(0.25 * 150)
    assert set(subject[fit]).isdisjoint(subject[val])


def test_validation_split_bad_size():
    with pytest.raises(ValueError, match="validation size"):
        validation_split(np.arange(10), 10)


def test_check_disjoint_names_the_site():
    site = np.array(["A", "A", "B", "C"])
    with pytest.raises(SplitError, match=r"1 site\(s\) in both .*\['A'\]"):
        check_disjoint([0, 2], [1, 3], site, what="site")
