"""Grouped cross-validation splits that never leak a subject, site or dataset.

Every splitter yields ``(train_idx, test_idx)`` pairs of sorted int64 index arrays into the samples. ``groups``
holds one label per sample (dataset name for the sex model, site for the AD model, subject for repeated scans);
a group is always entirely on one side. Seed 000 uses 5-fold leave-datasets-out (sex; the large datasets kept
in training) and 5-fold leave-sites-out (AD).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from learn import SplitError

__all__ = [
    "check_disjoint",
    "leave_groups_out",
    "leave_one_group_out",
    "stratified_group_kfold",
    "validation_split",
]


def _groups_array(groups, name: str = "groups") -> np.ndarray:
    g = np.asarray(groups)
    if g.ndim != 1 or g.shape[0] == 0:
        raise ValueError(f"'{name}' should be a non-empty 1-D sequence of labels; shape {g.shape} was provided")
    if g.dtype.kind == "f" and np.isnan(g).any():
        raise ValueError(f"'{name}' holds {int(np.isnan(g).sum())} NaN labels; every sample needs a group")
    if g.dtype == object and any(x is None for x in g):
        raise ValueError(f"'{name}' holds missing (None) labels; every sample needs a group")
    return g


def leave_groups_out(groups, n_splits: int = 5, seed: int = 0, *, always_train: Sequence = (),
                     n_trials: int = 1000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Grouped K-fold: each group is tested in exactly one fold, folds balanced by sample count.

    As in seed 000, groups are randomly allocated to folds ``n_trials`` times (greedy, largest first in a random
    order) and the allocation with the most even fold sizes is kept. Groups in ``always_train`` are never tested.

    Parameters
    ----------
    groups : (n,) labels
        Dataset / site / subject of each sample.
    n_splits : int
        Number of folds (>= 2, <= number of testable groups).
    seed : int
        Seed of the random allocations.
    always_train : sequence of labels
        Groups kept in every training set (ABCD, UK Biobank, ADNI in the sex model of seed 000).
    n_trials : int
        Random allocations tried.

    Yields
    ------
    train_idx, test_idx : (n_train,) int64, (n_test,) int64
    """
    g = _groups_array(groups)
    labels, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    always = set(np.asarray(list(always_train), dtype=g.dtype).tolist()) if len(always_train) else set()
    unknown = always - set(labels.tolist())
    if unknown:
        raise SplitError(f"'always_train' names groups absent from 'groups': {sorted(map(str, unknown))}")
    testable = np.array([i for i, lab in enumerate(labels.tolist()) if lab not in always], dtype=np.int64)
    if not isinstance(n_splits, (int, np.integer)) or n_splits < 2:
        raise SplitError(f"'n_splits' should be an integer >= 2; {n_splits!r} was provided")
    if testable.shape[0] < n_splits:
        raise SplitError(
            f"cannot make {n_splits} grouped folds from {testable.shape[0]} testable groups; "
            "lower 'n_splits' or use leave_one_group_out"
        )
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for _ in range(max(1, int(n_trials))):
        order = testable[rng.permutation(testable.shape[0])]
        order = order[np.argsort(-counts[order], kind="stable")]  # largest first, random among equal sizes
        fold_of = np.full(labels.shape[0], -1, dtype=np.int64)
        sizes = np.zeros(n_splits, dtype=np.int64)
        for gi in order:
            free = np.flatnonzero(sizes == sizes.min())
            f = free[rng.integers(free.shape[0])]
            fold_of[gi] = f
            sizes[f] += counts[gi]
        cost = float(sizes.max() - sizes.min())
        if cost < best_cost:
            best, best_cost = fold_of, cost
    sample_fold = best[inverse]
    for f in range(n_splits):
        test = np.flatnonzero(sample_fold == f)
        train = np.flatnonzero(sample_fold != f)
        yield train.astype(np.int64), test.astype(np.int64)


def stratified_group_kfold(y, groups, n_splits: int = 10, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Grouped K-fold that also keeps the class ratio of ``y`` similar across folds.

    Wraps :class:`sklearn.model_selection.StratifiedGroupKFold` (shuffled with ``seed``).

    Parameters
    ----------
    y : (n,) labels
    groups : (n,) labels
    n_splits : int
    seed : int

    Yields
    ------
    train_idx, test_idx : int64 arrays
    """
    from sklearn.model_selection import StratifiedGroupKFold

    g = _groups_array(groups)
    y = np.asarray(y)
    if y.shape != g.shape:
        raise ValueError(f"'y' and 'groups' should have the same length; {y.shape[0]} and {g.shape[0]} were provided")
    n_groups = np.unique(g).shape[0]
    if n_splits < 2 or n_splits > n_groups:
        raise SplitError(f"'n_splits' should be in [2, {n_groups}] (the number of groups); {n_splits} was provided")
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in sgkf.split(np.zeros((g.shape[0], 1)), y, g):
        yield np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def leave_one_group_out(groups) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One fold per group (in sorted label order): that group is the test set.

    Yields
    ------
    train_idx, test_idx : int64 arrays
    """
    g = _groups_array(groups)
    labels = np.unique(g)
    if labels.shape[0] < 2:
        raise SplitError(f"leave-one-group-out needs at least 2 groups; only {labels.tolist()} was found")
    for lab in labels:
        test = np.flatnonzero(g == lab)
        train = np.flatnonzero(g != lab)
        yield train.astype(np.int64), test.astype(np.int64)


def validation_split(train_idx, size: float | None = None, seed: int = 0, groups=None, *,
                     n_val: int | None = None, fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split a training set into (fit, validation) at random, as seed 000 does (600 sex / 120 AD scans).

    Parameters
    ----------
    train_idx : (n,) int
        Indices of the training samples.
    size : int or float, optional
        An int is a number of samples, a float in (0, 1) a fraction. Alternatively ``n_val=`` or ``fraction=``.
    seed : int
    groups : (n_samples_total,) labels, optional
        Indexed by ``train_idx``; when given, whole groups (e.g. subjects with repeated scans) go to validation
        until at least the requested size is reached, so no group is on both sides.

    Returns
    -------
    fit_idx, val_idx : int64 arrays (sorted)
    """
    given = [v for v in (size, n_val, fraction) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of 'size', 'n_val' or 'fraction' for the validation split")
    train_idx = np.asarray(train_idx, dtype=np.int64)
    n = train_idx.shape[0]
    v = given[0]
    if fraction is not None or (size is not None and isinstance(size, float) and size < 1.0):
        if not 0.0 < float(v) < 1.0:
            raise ValueError(f"a validation fraction should be in (0, 1); {v!r} was provided")
        k = max(1, int(round(float(v) * n)))
    else:
        k = int(v)
    if not 1 <= k < n:
        raise ValueError(
            f"validation size should be in [1, {n - 1}] for {n} training samples; {k} was requested"
        )
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        val = train_idx[perm[:k]]
        fit = train_idx[perm[k:]]
    else:
        g = _groups_array(groups)[train_idx]
        labels, inverse = np.unique(g, return_inverse=True)
        chosen = np.zeros(labels.shape[0], dtype=bool)
        count = 0
        for gi in rng.permutation(labels.shape[0]):
            if count >= k:
                break
            chosen[gi] = True
            count += int(np.sum(inverse == gi))
        if chosen.all():
            raise SplitError(
                f"a validation split of {k} samples takes every group of the training set; lower the size"
            )
        mask = chosen[inverse]
        val, fit = train_idx[mask], train_idx[~mask]
    return np.sort(fit), np.sort(val)


def check_disjoint(train_idx, test_idx, groups, what: str = "site") -> None:
    """Raise :class:`SplitError` (a ValueError) when a group is on both sides of a split.

    Parameters
    ----------
    train_idx, test_idx : int arrays
        Indices into ``groups``.
    groups : (n,) labels
        Site / dataset / subject per sample.
    what : str
        Name of the grouping used in the message ("site", "dataset", "subject").
    """
    g = _groups_array(groups)
    a = set(g[np.asarray(train_idx, dtype=np.int64)].tolist())
    b = set(g[np.asarray(test_idx, dtype=np.int64)].tolist())
    shared = sorted(map(str, a & b))
    if shared:
        raise SplitError(
            f"{len(shared)} {what}(s) in both the training and the test set: {shared[:10]}"
            f"{' ...' if len(shared) > 10 else ''}; a {what} must be entirely on one side "
            f"(use a grouped splitter such as learn.cv.leave_groups_out with the {what} labels)"
        )
