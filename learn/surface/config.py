"""Settings of the surface path as dataclasses, importable without torch (``--help`` stays fast).

:class:`ExperimentConfig` is the whole seed-001 experiment that ``surfmap-learn surface run --config FILE`` runs
(:mod:`learn.surface.experiment`): a source cohort for stage one (sex, HCP), a target cohort (autism, ABIDE),
transfer strategies, stacking, occlusion maps and baselines. :class:`RunConfig` is the older single-stage
cross-validation (a ``[data]`` section instead of ``[target]``). :func:`describe` lists every section and key
with its default, for ``--help``.

Where this code and the seed differ, the seed's choice is a key, and the default is explained here:

- loss: the seed's "cross-entropy" over two classes is binary cross-entropy on one logit (a softmax over two
  logits depends only on their difference), so there is no key;
- occlusion score: the seed measures the *accuracy* drop (``[occlusion] scores = ["accuracy"]``); the default
  also writes the drop of the true-class *probability*, which is not quantised to 1/n and so is far less noisy on
  test folds of tens of subjects;
- grey input to ImageNet networks, normalisation: see :mod:`learn.surface.dataset` (``[cv] normalization``);
- stacking hyper-parameters: the seed grid-searches XGBoost; ``[stacking] param_grid`` is that grid, searched on
  the outer training subjects only. CNN hyper-parameters are the seed's schedule (``[schedule]``), not searched.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from learn import ConfigError

__all__ = [
    "BaselinesConfig",
    "CVConfig",
    "CohortConfig",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OcclusionConfig",
    "RunConfig",
    "ScheduleConfig",
    "StackingConfig",
    "SyntheticConfig",
    "TransferConfig",
    "describe",
]

STRATEGIES = ("two_stage", "imagenet", "scratch", "source_only")
BASELINES = ("pca_svm", "cnn3d", "slices")


@dataclass
class ScheduleConfig:
    """Seed 001's training schedule (the defaults) with every number exposed."""

    epochs: int = 125
    mixup_epochs: int = 75
    lr: float = 0.01
    lr_step_epochs: int = 25
    lr_gamma: float = 0.1
    final_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    mixup_alpha: float = 1.0

    def __post_init__(self):
        if self.epochs < 1 or not 0 <= self.mixup_epochs <= self.epochs:
            raise ConfigError(
                f"schedule: expected epochs >= 1 and 0 <= mixup_epochs <= epochs; found epochs={self.epochs}, "
                f"mixup_epochs={self.mixup_epochs}"
            )
        if self.lr <= 0 or self.final_lr <= 0 or self.lr_step_epochs < 1 or not 0 < self.lr_gamma <= 1:
            raise ConfigError(
                "schedule: expected lr > 0, final_lr > 0, lr_step_epochs >= 1 and 0 < lr_gamma <= 1; found "
                f"lr={self.lr}, final_lr={self.final_lr}, lr_step_epochs={self.lr_step_epochs}, "
                f"lr_gamma={self.lr_gamma}"
            )
        if self.batch_size < 2:
            raise ConfigError(f"schedule: 'batch_size' should be at least 2; {self.batch_size} was provided")


@dataclass
class ModelConfig:
    """Which network: ``name`` in resnet18 / resnet34 / resnet50 / densenet121 / tiny; ``weights`` "imagenet",
    a file path, or None / "none" / "scratch" (from scratch; TOML has no null)."""

    name: str = "resnet50"
    weights: str | None = "imagenet"
    tiny_width: int = 16
    tiny_depth: int = 3

    def __post_init__(self):
        if isinstance(self.weights, str) and self.weights.strip().lower() in ("none", "scratch", ""):
            self.weights = None


@dataclass
class CVConfig:
    """Cross-validation: ``scheme`` "kfold" (stratified, grouped by subject) or "loso" (leave one site out).

    ``inner_splits >= 2`` also runs, inside every outer training set, an inner grouped K-fold whose
    out-of-fold predictions (rows with ``role = "inner"``) are the leakage-free training features of a stacker
    (:mod:`learn.surface.stacking`): they come from models that never saw the outer test fold.

    ``repeats = R`` reruns the whole cross-validation with R fold assignments and training seeds, and
    ``permutations = P`` on P within-site label permutations (:mod:`learn.surface.uncertainty`).
    """

    scheme: str = "kfold"
    n_splits: int = 10
    seed: int = 0
    per_channel: bool = True
    normalization: str = "channel"
    bootstrap_rounds: int = 1000
    shuffle_labels: bool = False
    inner_splits: int = 0
    repeats: int = 1
    permutations: int = 0

    def __post_init__(self):
        if self.repeats < 1 or self.permutations < 0:
            raise ConfigError(f"cv 'repeats' should be >= 1 and 'permutations' >= 0; {self.repeats} and "
                              f"{self.permutations} were provided")
        if self.scheme not in ("kfold", "loso"):
            raise ConfigError(f"cv 'scheme' should be 'kfold' or 'loso'; {self.scheme!r} was provided")
        if self.normalization not in ("channel", "pixel", "none"):
            raise ConfigError(
                f"cv 'normalization' should be 'channel', 'pixel' or 'none'; {self.normalization!r} was provided"
            )
        if self.inner_splits == 1 or self.inner_splits < 0:
            raise ConfigError(f"cv 'inner_splits' should be 0 (off) or >= 2; {self.inner_splits} was provided")


@dataclass
class DataConfig:
    """Where the images come from: ``source`` "manifest" (``surfmap batch`` output + cohort table) or
    "synthetic" (the ``[synthetic]`` section)."""

    source: str = "manifest"
    manifest: str | None = None
    table: str | None = None
    metrics: list[str] | None = None
    hemis: list[str] = field(default_factory=lambda: ["left", "right"])
    label_column: str = "label"
    subject_column: str = "subject"
    site_column: str = "site"
    on_missing: str = "error"


@dataclass
class SyntheticConfig:
    """A SYNTHETIC cohort rasterized in template mode (see :mod:`learn.surface.synthetic`).

    ``cohort`` "hcp_like" (one site, label = sex) or "abide_like" (``n_sites`` sites, label = ASD, a sex effect
    of ``sex_effect_size`` in the regions an "hcp_like" cohort of the same ``seed`` uses). ``label_regions_seed``
    moves the label's regions (abide_like default: ``seed + 5003``, regions unrelated to the sex regions; set it to
    the source cohort's ``seed`` to plant the ASD effect where the sex effect is). ``effect_metrics`` limits the
    label effect to these metrics (default: all). ``family_size > 1`` adds a ``family`` column grouping
    consecutive subjects (use ``group_column = "family"``). ``site_fwhm_range``, ``site_gain_sd`` and
    ``site_offset_sd``: smoothness, scanner gain and offset of the abide_like sites (``fwhm_mm`` is the hcp_like
    smoothness); with site prevalences that differ, gain and offset make the site a confound a CNN can learn.
    ``template`` "grid" is a flat test grid whose images are ``grid_size`` pixels (``image_size`` must equal it);
    every grid cohort shares one grid template.
    """

    cohort: str = "hcp_like"
    template: str = "fsaverage5"
    n_subjects: int = 200
    n_sites: int = 10
    subjects_per_site: list[int] = field(default_factory=lambda: [20, 60])
    effect_size: float = 0.8
    n_regions: int = 3
    radius_mm: float = 20.0
    fwhm_mm: float = 20.0
    hemis: list[str] = field(default_factory=lambda: ["left", "right"])
    metrics: list[str] | None = None
    image_size: int = 224
    map_method: str = "area"
    grid_size: int = 32
    seed: int = 0
    sex_effect_size: float = 0.8
    label_regions_seed: int | None = None
    effect_metrics: list[str] | None = None
    family_size: int = 1
    site_fwhm_range: list[float] = field(default_factory=lambda: [12.0, 30.0])
    site_gain_sd: float = 0.05
    site_offset_sd: float = 0.3


@dataclass
class RunConfig:
    """A whole experiment: top-level keys plus the sections below."""

    out_dir: str = "runs/surface"
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    num_workers: int = 0
    progress: bool = True
    resume: bool = True
    keep_models: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cv: CVConfig = field(default_factory=CVConfig)


@dataclass
class CohortConfig:
    """A cohort of the experiment (``[source]``: stage one, sex on HCP; ``[target]``: autism on ABIDE).

    ``kind`` "manifest" reads ``surfmap batch`` images (``manifest``) and a cohort table (``table``: subject,
    label 0/1, site, and ``group_column`` if given); "synthetic" builds the ``[<cohort>.synthetic]`` cohort; "none"
    (source only) means no stage one. ``group_column`` keeps a group (HCP family: twins, siblings) on one side of
    every split; without it each subject is its own group. ``schedule`` (source only) replaces the top-level
    ``[schedule]`` for stage one.
    """

    kind: str = "synthetic"
    manifest: str | None = None
    table: str | None = None
    metrics: list[str] | None = None
    hemis: list[str] = field(default_factory=lambda: ["left", "right"])
    label_column: str = "label"
    subject_column: str = "subject"
    site_column: str = "site"
    group_column: str | None = None
    on_missing: str = "error"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    schedule: ScheduleConfig | None = None

    def __post_init__(self):
        if self.kind not in ("synthetic", "manifest", "none"):
            raise ConfigError(f"cohort 'kind' should be 'synthetic', 'manifest' or 'none'; {self.kind!r} was provided")
        if self.kind == "manifest" and (not self.manifest or not self.table):
            raise ConfigError("a cohort of kind 'manifest' needs 'manifest' (manifest.tsv of surfmap batch) and "
                              "'table' (cohort CSV with subject, label, site)")


@dataclass
class TransferConfig:
    """Which initialisations to compare (the seed's Tables 1-2): ``two_stage`` (ImageNet -> source -> target),
    ``imagenet`` (ImageNet -> target, "transfer"), ``scratch``, ``source_only`` (random -> source -> target).
    ``reset_head`` re-initialises the last layer before the target task (the seed replaces it)."""

    strategies: list[str] = field(default_factory=lambda: ["two_stage", "imagenet", "scratch"])
    reset_head: bool = True

    def __post_init__(self):
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ConfigError(f"[transfer] 'strategies' should be a non-empty list of {list(STRATEGIES)}; "
                              f"{self.strategies!r} was provided")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(f"[transfer] 'strategies' repeats a name: {self.strategies}")


@dataclass
class StackingConfig:
    """XGBoost stacking of the per-channel probabilities (seed 001), without leakage: ``inner_splits`` inner
    folds inside every outer training set give the stacker its training features; ``param_grid`` is grid-searched
    with ``grid_cv`` folds on those training subjects only. ``enabled = false`` reports only the channel mean."""

    enabled: bool = True
    inner_splits: int = 3
    param_grid: dict | None = None
    grid_cv: int = 3
    n_jobs: int = 1

    def __post_init__(self):
        if self.enabled and self.inner_splits < 2:
            raise ConfigError(f"[stacking] 'inner_splits' should be >= 2; {self.inner_splits} was provided")


@dataclass
class OcclusionConfig:
    """Occlusion maps of the *test* subjects of every outer fold, from that fold's model, averaged per class and
    written as images, GIFTI on the template and figures. ``scores``: "probability" (drop of the true-class
    probability) and / or "accuracy" (the seed's). ``patch`` / ``stride`` default to the seed's 30 / 4 at 224
    pixels, scaled to the image size. ``strategies`` default to the first of ``[transfer]``. Real data need
    the template's flat map per hemisphere (``flatmaps = {left = "lh.flatmap.npz", ...}``, FlatMap.save) for the
    cortex output, and optionally ``surfaces`` (``{left = "lh.midthickness.surf.gii"}``) for the 3D figure."""

    enabled: bool = True
    strategies: list[str] | None = None
    channels: list[str] | None = None
    scores: list[str] = field(default_factory=lambda: ["probability", "accuracy"])
    patch: int | None = None
    stride: int | None = None
    fill: float = 0.0
    flatmaps: dict = field(default_factory=dict)
    surfaces: dict = field(default_factory=dict)

    def __post_init__(self):
        bad = [s for s in self.scores if s not in ("probability", "accuracy")]
        if bad or not self.scores:
            raise ConfigError(f"[occlusion] 'scores' should list 'probability' and/or 'accuracy'; {self.scores!r} "
                              "was provided")


@dataclass
class BaselinesConfig:
    """The seed's comparison methods on the same target subjects and folds (Table 2): ``pca_svm`` (PCA + linear
    SVM on the vertex metrics, or on the pixels for image-only cohorts), ``cnn3d`` (3D CNN on the metrics
    voxelised in a ``grid``^3 box, the seed's "3D mesh"), ``slices`` (2D CNNs on three middle slices of that grid,
    stacked). ``cnn3d`` and ``slices`` need vertex coordinates (synthetic cohorts)."""

    methods: list[str] = field(default_factory=lambda: ["pca_svm", "cnn3d"])
    pca_components: float = 0.9
    svm_c: float = 1.0
    grid: int = 24
    cnn3d_width: int = 8
    cnn3d_depth: int = 3
    schedule: ScheduleConfig | None = None

    def __post_init__(self):
        bad = [m for m in self.methods if m not in BASELINES]
        if bad:
            raise ConfigError(f"[baselines] 'methods' should list some of {list(BASELINES)}; {bad} was provided")


@dataclass
class ExperimentConfig:
    """The whole seed-001 experiment: top-level keys plus the sections below.

    ``resume``: a rerun skips every finished unit (source channel, outer fold, inner fold, stacking fold,
    occlusion fold, baseline) and continues an interrupted training from its ``last.pt``. ``threads``: torch
    CPU threads (0 keeps torch's default).
    """

    out_dir: str = "runs/surface-experiment"
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    num_workers: int = 0
    threads: int = 0
    progress: bool = True
    resume: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    source: CohortConfig = field(default_factory=lambda: CohortConfig(
        synthetic=SyntheticConfig(cohort="hcp_like")))
    target: CohortConfig = field(default_factory=lambda: CohortConfig(
        synthetic=SyntheticConfig(cohort="abide_like", effect_size=0.4)))
    transfer: TransferConfig = field(default_factory=TransferConfig)
    stacking: StackingConfig = field(default_factory=StackingConfig)
    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)

    def __post_init__(self):
        needs_source = [s for s in self.transfer.strategies if s in ("two_stage", "source_only")]
        if needs_source and self.source.kind == "none":
            raise ConfigError(f"strategies {needs_source} need a [source] cohort; [source] kind is 'none'")
        if self.target.kind == "none":
            raise ConfigError("[target] 'kind' should be 'synthetic' or 'manifest'; the target cohort is required")
        occ = self.occlusion.strategies or []
        bad = [s for s in occ if s not in self.transfer.strategies]
        if bad:
            raise ConfigError(f"[occlusion] 'strategies' {bad} are not in [transfer] strategies "
                              f"{self.transfer.strategies}")


def describe(cls=ExperimentConfig) -> str:
    """Every section and key of a config class with its default, as TOML-like lines (for ``--help``)."""
    lines: list[str] = []

    def default_of(f):
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return None

    def fmt(v):
        if v is None:
            return "(unset)"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {fmt(x)}" for k, x in v.items()) + "}"
        return str(v)

    def walk(obj, prefix):
        hints = typing.get_type_hints(type(obj))
        simple, nested = [], []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            tp = hints[f.name]
            inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            if dataclasses.is_dataclass(value):
                nested.append((f.name, value))
            elif value is None and inner:
                simple.append(f"{f.name} = (unset: a [{prefix}{f.name}] table like [schedule])")
            else:
                simple.append(f"{f.name} = {fmt(value)}")
        if simple:
            lines.append(f"[{prefix.rstrip('.')}]" if prefix else "(top level)")
            lines.extend("  " + s for s in simple)
        for name, value in nested:
            walk(value, prefix + name + ".")

    walk(cls(), "")
    return "\n".join(lines)
