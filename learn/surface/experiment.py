"""Seed 001's whole method from one config, resumable at every unit: ``surfmap-learn surface run --config FILE``.

Stages (each unit writes its result atomically; a rerun skips finished units and continues an interrupted
training from its ``last.pt``, which gives the numbers of an uninterrupted run):

1. **source** (stage one): per channel, a network fine-tuned on the whole source cohort (sex, HCP), from ImageNet
   (``two_stage``) and / or from random weights (``source_only``): ``source/<init>/<channel>/model.pt``.
2. **strategies**: per strategy of ``[transfer]``, the target cross-validation (autism, ABIDE) of
   :func:`learn.surface.train.cross_validate`, every fold starting from the strategy's weights, with inner folds
   for stacking: ``strategies/<strategy>/folds/<channel>/foldKK[/innerJ]``.
3. **stacking**: per strategy and outer fold, XGBoost on the inner out-of-fold probabilities
   (:func:`learn.surface.stacking.fit_stacker`): ``stacking/<strategy>/foldKK.csv`` and ``stackerKK.json``.
4. **occlusion**: per strategy, channel and outer fold, the fold model's occlusion maps of that fold's *test*
   subjects, per class: ``occlusion/<strategy>/<channel>/foldKK.npz``; then averaged per class, back on the
   cortex (GIFTI) and drawn.
5. **baselines**: PCA + SVM, 3D CNN, 2D slices on the same target folds: ``baselines/<method>/predictions.csv``.
6. **report** (:mod:`learn.surface.report`): ``results.json``, ``table.csv`` / ``table.md`` in the layout of the
   seed's Tables 1-2 with bootstrap intervals, ROC curves, confusion matrices, ``report.md``.

Every number obtained on a SYNTHETIC cohort is labelled so, and a row whose AUC interval holds 0.5 says it is
within noise of chance. :func:`predict_run` scores new subjects with a run's fold ensemble (and stackers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from learn import ConfigError, DataError

from .config import CohortConfig, ExperimentConfig, ScheduleConfig

__all__ = ["ExperimentData", "Progress", "load_cohort", "predict_run", "run_experiment"]

log = logging.getLogger(__name__)

# settings that do not change any number: a resumed run may differ in these
_NEUTRAL_KEYS = ("out_dir", "device", "num_workers", "threads", "progress", "resume")


# ---------------------------------------------------------------------------------------------
# cohorts


@dataclasses.dataclass
class ExperimentData:
    """A cohort ready for the pipeline.

    Attributes
    ----------
    dataset : SurfaceImageDataset
    synthetic : bool
    cohort : SyntheticCohort or None
    rasterizers : dict of hemi -> surfmap.Rasterizer (with ``backproject``), possibly empty
    meshes : dict of hemi -> surfmap.Mesh (template surfaces for figures), possibly empty
    labelled : bool
        False for new subjects scored without labels.
    """

    dataset: object
    synthetic: bool
    cohort: object = None
    rasterizers: dict = dataclasses.field(default_factory=dict)
    meshes: dict = dataclasses.field(default_factory=dict)
    labelled: bool = True


def synthetic_cohort(sc, *, seed_override: int | None = None, name_suffix: str = ""):
    """The SYNTHETIC cohort of a ``[*.synthetic]`` section, with its label regions and effect metrics applied.

    ``seed_override`` draws new subjects (noise, labels) with the same planted effects (for ``predict``)."""
    from . import synthetic as S

    common = dict(template=sc.template, hemis=tuple(sc.hemis), metrics=tuple(sc.metrics) if sc.metrics else None,
                  effect_size=sc.effect_size, n_regions=sc.n_regions, radius_mm=sc.radius_mm, seed=sc.seed,
                  grid_size=sc.grid_size)
    if sc.cohort == "hcp_like":
        cohort = S.hcp_like_cohort(sc.n_subjects, fwhm_mm=sc.fwhm_mm, **common)
    elif sc.cohort == "abide_like":
        lo, hi = (list(sc.subjects_per_site) + list(sc.subjects_per_site))[:2]
        cohort = S.abide_like_cohort(sc.n_sites, (int(lo), int(hi)), sex_effect_size=sc.sex_effect_size,
                                     fwhm_range=tuple(sc.site_fwhm_range), site_gain_sd=sc.site_gain_sd,
                                     site_offset_sd=sc.site_offset_sd, **common)
    else:
        raise ConfigError(f"synthetic 'cohort' should be 'hcp_like' or 'abide_like'; {sc.cohort!r} was provided")
    spec = cohort.spec
    effects = list(spec.effects)
    if sc.label_regions_seed is not None:
        effects = [e for e in effects if e.column != "label"] + list(S._region_effects(
            cohort.templates, "label", cohort.metrics, sc.n_regions, sc.radius_mm, sc.effect_size,
            sc.label_regions_seed))
    if sc.effect_metrics is not None:
        unknown = [m for m in sc.effect_metrics if m not in cohort.metrics]
        if unknown:
            raise ConfigError(f"synthetic 'effect_metrics' {unknown} are not metrics of the cohort {cohort.metrics}")
        effects = [e for e in effects if e.column != "label" or e.metric in sc.effect_metrics]
    changes = {}
    templates = cohort.templates
    if sc.template == "grid":
        # every grid cohort on one template (the same group-mean maps), as real cohorts share fsaverage / fs_LR
        templates = {h: S.grid_template(sc.grid_size, hemi=h, seed=0) for h in cohort.templates}
        changes["grid_size"] = sc.grid_size
    if tuple(effects) != spec.effects:
        changes["effects"] = tuple(effects)
    if seed_override is not None:
        changes.update(seed=int(seed_override), name=spec.name + name_suffix)
    if changes:
        cohort = S.SyntheticCohort(dataclasses.replace(spec, **changes), templates)
    if sc.family_size > 1:
        n = cohort.n_subjects
        cohort.table["family"] = [f"family{i // sc.family_size:05d}" for i in range(n)]
    return cohort


def _template_flatmap(template, method: str):
    """The flat map of a template hemisphere's cortex, computed once and kept beside the eigenmode cache
    (``$SURFMAP_CACHE_DIR`` or ``~/.cache/surfmap``), keyed by a hash of the mesh, the mask and the method."""
    import hashlib

    import surfmap

    from . import synthetic as S

    h = hashlib.sha1()
    for a in (template.mesh.vertices, template.mesh.faces, template.cortex):
        h.update(np.ascontiguousarray(a).tobytes())
    name = f"{template.name}_{template.hemi}_{method}_{h.hexdigest()[:16]}.npz"
    path = S._default_cache_dir().parent / "flatmaps" / name
    if path.is_file():
        try:
            return surfmap.FlatMap.load(path)
        except (surfmap.SurfmapError, OSError, ValueError) as exc:
            log.warning("cached flat map %s could not be read (%s); recomputing it", path, exc)
    fm = surfmap.flatten(template.mesh, template.cortex, method=method)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fm.save(path)
    except OSError as exc:
        log.warning("could not cache the flat map in %s (%s)", path, exc)
    return fm


def load_cohort(cc: CohortConfig, *, seed_override: int | None = None, name_suffix: str = "") -> ExperimentData:
    """Images (and, for SYNTHETIC cohorts, the generator, rasterizers and template meshes) of a cohort section."""
    from .dataset import SurfaceImageDataset

    if cc.kind == "manifest":
        ds = SurfaceImageDataset.from_manifest(
            cc.manifest, cc.table, metrics=cc.metrics, hemis=tuple(cc.hemis), label_column=cc.label_column,
            subject_column=cc.subject_column, site_column=cc.site_column, group_column=cc.group_column,
            on_missing=cc.on_missing,
        )
        synthetic = bool("synthetic" in ds.table.columns and ds.table["synthetic"].astype(bool).any())
        return ExperimentData(ds, synthetic)
    if cc.kind != "synthetic":
        raise ConfigError(f"cohort 'kind' should be 'synthetic' or 'manifest'; {cc.kind!r} was provided")
    import surfmap

    from . import synthetic as S

    sc = cc.synthetic
    cohort = synthetic_cohort(sc, seed_override=seed_override, name_suffix=name_suffix)
    if sc.template == "grid":
        if sc.image_size != sc.grid_size:
            raise ConfigError(f"a grid template gives {sc.grid_size}-pixel images; set image_size = {sc.grid_size}")
        R = {h: surfmap.Rasterizer(S.grid_flatmap(t), size=sc.grid_size) for h, t in cohort.templates.items()}
    else:
        R = {h: surfmap.Rasterizer(_template_flatmap(t, sc.map_method), size=sc.image_size)
             for h, t in cohort.templates.items()}
    images, channels = cohort.images(R)
    if cc.group_column is not None and cc.group_column not in cohort.table.columns:
        raise ConfigError(f"group_column {cc.group_column!r} is not a column of the SYNTHETIC table "
                          f"{list(cohort.table.columns)} (set [*.synthetic] family_size > 1 for 'family')")
    ds = SurfaceImageDataset.from_arrays(images, cohort.table, channels, group_column=cc.group_column)
    log.info("SYNTHETIC cohort %s: %d subjects, channels %s", cohort.spec.name, len(ds), channels)
    return ExperimentData(ds, True, cohort, R, {h: t.mesh for h, t in cohort.templates.items()})


# ---------------------------------------------------------------------------------------------
# progress


class Progress(logging.Filter):
    """Names the running unit in every epoch line and adds an ETA (attached to the ``learn`` loggers' records).

    Work is counted in sample-epochs; the ETA is the training time per sample-epoch so far times what is left
    (set-up, stacking, occlusion and figures are not counted)."""

    def __init__(self, synthetic: bool):
        super().__init__()
        self.synthetic = synthetic
        self.total = 0.0
        self.done = 0.0
        self.skipped = 0.0
        self.unit = ""
        self.n_train = 0
        self.train_seconds = 0.0
        self.t_last = time.monotonic()

    def plan(self, work: float) -> None:
        self.total += float(work)

    def enter(self, unit: str, n_train: int, epochs: int, skipped: bool = False) -> None:
        if skipped:
            self.skipped += float(n_train) * epochs
            return
        self.unit, self.n_train = unit, int(n_train)
        self.t_last = time.monotonic()
        log.info("%s: training on %d subjects for %d epochs", self._tag(), n_train, epochs)

    def _tag(self) -> str:
        return ("SYNTHETIC " if self.synthetic else "") + self.unit

    def eta(self) -> str:
        left = max(self.total - self.done - self.skipped, 0.0)
        if self.done <= 0:
            return "ETA unknown"
        s = int(round(self.train_seconds / self.done * left))
        return f"ETA {s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"ETA {s // 60}m{s % 60:02d}s"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "learn.training" and isinstance(record.msg, str) and record.msg.startswith("epoch "):
            now = time.monotonic()
            self.train_seconds += now - self.t_last
            self.t_last = now
            self.done += self.n_train
            record.msg = f"[{self._tag()}] {record.msg} | {self.eta()}"
        return True


class _attach:
    """Context manager: the Progress filter on the training logger for the duration of a run."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.logger = logging.getLogger("learn.training")

    def __enter__(self):
        self.logger.addFilter(self.progress)
        return self.progress

    def __exit__(self, *exc):
        self.logger.removeFilter(self.progress)


# ---------------------------------------------------------------------------------------------
# the run


def _resolved_dict(cfg: ExperimentConfig) -> dict:
    from learn.checkpoint import to_jsonable

    return json.loads(json.dumps(to_jsonable(cfg)))


def _check_resume_config(out: Path, cfg: ExperimentConfig) -> None:
    """A rerun into a folder must use the settings its results came from (except device, threads, ...)."""
    path = out / "config.resolved.json"
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    new = _resolved_dict(cfg)
    diff = sorted(k for k in set(old) | set(new) if k not in _NEUTRAL_KEYS and old.get(k) != new.get(k))
    started = any((out / d).exists() for d in ("source", "strategies", "stacking", "occlusion", "baselines"))
    if diff and started:
        raise ConfigError(
            f"{str(out)!r} holds a run made with other settings (sections {diff} differ from "
            f"{str(path)!r}); choose another out_dir (--out), or delete the folder to start over"
        )


def _stage_schedules(cfg: ExperimentConfig) -> tuple[ScheduleConfig, ScheduleConfig]:
    return cfg.source.schedule or cfg.schedule, cfg.target.schedule or cfg.schedule


def _source_inits(cfg: ExperimentConfig) -> dict:
    """Stage-one variants needed: strategy -> init name ("imagenet" or "random"); one shared when equal."""
    out = {}
    for s in cfg.transfer.strategies:
        if s == "two_stage":
            out[s] = "imagenet" if cfg.model.weights is not None else "random"
        elif s == "source_only":
            out[s] = "random"
    return out


def _train_source(source, channels, init: str, cfg: ExperimentConfig, out: Path, progress: Progress) -> dict:
    """Stage one for one initialisation: per channel, resumable (``model.pt`` done, ``last.pt`` in progress)."""
    from learn.checkpoint import load_checkpoint, save_checkpoint

    from .dataset import Normalizer
    from .models import build_model
    from .train import _remove_resume_state, train_model

    schedule, _ = _stage_schedules(cfg)
    model_cfg = cfg.model if init == "imagenet" else dataclasses.replace(cfg.model, weights=None)
    states = {}
    for i, ch in enumerate(channels):
        d = out / "source" / init / ch
        done = d / "model.pt"
        unit = f"source ({init} init) | {ch} | all {len(source)} subjects"
        if cfg.resume and done.is_file():
            progress.enter(unit, len(source), schedule.epochs, skipped=True)
            model = build_model(model_cfg.name, weights=None, in_channels=1, num_outputs=1,
                                tiny_width=model_cfg.tiny_width, tiny_depth=model_cfg.tiny_depth)
            load_checkpoint(done, model)
            states[ch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            continue
        ds = source.select(ch)
        idx = np.arange(len(ds))
        norm = Normalizer(cfg.cv.normalization).fit(ds.images, idx)
        last = d / "last.pt"
        progress.enter(unit, len(ds), schedule.epochs)
        model, _ = train_model(
            ds.fold(idx, norm), model_cfg=model_cfg, schedule=schedule, in_channels=1, device=cfg.device,
            seed=cfg.seed + 101 * i, amp=cfg.amp, progress=cfg.progress, num_workers=cfg.num_workers,
            checkpoint_dir=d, resume=last if (cfg.resume and last.is_file()) else None,
        )
        states[ch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        np.savez(d / "normalizer.npz", **{k: np.asarray(v) for k, v in norm.state_dict().items()})
        save_checkpoint(done, model=model, epoch=schedule.epochs - 1, channel=ch, stage="source", init=init,
                        model_name=model_cfg.name)
        _remove_resume_state(last)
    return states


def _target_cfg(cfg: ExperimentConfig, strategy: str):
    if strategy == "imagenet":
        return cfg.model
    return dataclasses.replace(cfg.model, weights=None)


def _cv_config(cfg: ExperimentConfig):
    inner = cfg.stacking.inner_splits if cfg.stacking.enabled else 0
    if cfg.cv.inner_splits not in (0, inner):
        raise ConfigError(f"[cv] inner_splits = {cfg.cv.inner_splits} disagrees with [stacking] inner_splits = "
                          f"{inner}; set it in [stacking] only")
    # labels are shuffled once by the experiment (so baselines, stacking and occlusion see the same ones)
    return dataclasses.replace(cfg.cv, inner_splits=inner, shuffle_labels=False)


def _run_strategy(target, channels, strategy, states, cfg, out: Path, progress: Progress) -> dict:
    from .train import cross_validate

    _, schedule = _stage_schedules(cfg)

    def on_unit(u):
        where = f"outer fold {u['fold'] + 1}/{u['n_folds']}"
        if u["inner"] >= 0:
            where += f" | inner fold {u['inner'] + 1}/{u['inner_splits']}"
        progress.enter(f"{strategy} | {u['channel']} | {where}", u["n_train"], u["epochs"], u["skipped"])

    return cross_validate(
        target, model_cfg=_target_cfg(cfg, strategy), schedule=schedule, cv=_cv_config(cfg),
        out_dir=out / "strategies" / strategy, device=cfg.device, seed=cfg.seed, amp=cfg.amp, progress=cfg.progress,
        num_workers=cfg.num_workers, resume=cfg.resume, channels=channels, init_states=states,
        reset_head=cfg.transfer.reset_head, on_unit=on_unit,
    )


def _stack(pred: pd.DataFrame, channels, cfg: ExperimentConfig, folder: Path) -> pd.DataFrame:
    """Per outer fold, resumable: ``foldKK.csv`` (stacked test probabilities) and ``stackerKK.json``."""
    from learn.cv import check_disjoint

    from .stacking import feature_table, fit_stacker
    from .train import _write_csv

    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for k in sorted(pred["fold"].unique()):
        done = folder / f"fold{k:02d}.csv"
        if cfg.resume and done.is_file():
            parts.append(pd.read_csv(done, dtype={"subject": str}))
            continue
        tr = feature_table(pred, k, "inner", channels)
        te = feature_table(pred, k, "test", channels)
        subjects = np.concatenate([tr.index.to_numpy(), te.index.to_numpy()])
        check_disjoint(np.arange(len(tr)), np.arange(len(tr), len(subjects)), subjects, "subject")
        model, best = fit_stacker(tr[list(channels)].to_numpy(), tr["label"].to_numpy().astype(int),
                                  param_grid=cfg.stacking.param_grid, inner_cv=cfg.stacking.grid_cv,
                                  seed=cfg.seed, n_jobs=cfg.stacking.n_jobs)
        scores = model.predict_proba(te[list(channels)].to_numpy())[:, 1].astype(np.float64)
        df = pd.DataFrame({"subject": te.index.to_numpy(), "site": te["site"].to_numpy(),
                           "label": te["label"].to_numpy().astype(int), "fold": k, "score": scores,
                           "best_params": json.dumps(best, sort_keys=True)})
        model.save_model(str(folder / f"stacker{k:02d}.json"))
        (folder / "channels.json").write_text(json.dumps(list(channels)))
        _write_csv(df, done)
        log.info("stacking fold %d: %d training subjects (inner out-of-fold), best %s", k + 1, len(tr), best)
        parts.append(df)
    out = pd.concat(parts, ignore_index=True)
    out.to_csv(folder / "predictions.csv", index=False)
    return out


def _fold_model(fold_dir: Path, model_cfg):
    """A fold's network and normaliser, read back from its folder."""
    from learn.checkpoint import load_checkpoint

    from .dataset import Normalizer
    from .models import build_model

    model = build_model(model_cfg.name, weights=None, in_channels=1, num_outputs=1, tiny_width=model_cfg.tiny_width,
                        tiny_depth=model_cfg.tiny_depth)
    load_checkpoint(fold_dir / "model.pt", model)
    with np.load(fold_dir / "normalizer.npz", allow_pickle=False) as z:
        norm = Normalizer.from_state_dict({k: z[k] for k in z.files})
    return model.eval(), norm


def _occlusion(target: ExperimentData, strategy, channels, splits, cfg, out: Path) -> dict:
    """Occlusion maps of each fold's test subjects from that fold's model, per class; averaged over folds with
    the subjects as weights; written as ``.npy``, GIFTI (when a rasterizer can back-project) and PNG."""
    from learn.utils import get_device

    from .occlusion import occlusion_maps

    oc = cfg.occlusion
    ds = target.dataset
    device = get_device(cfg.device)
    folder = out / "occlusion" / strategy
    summary = {}
    for ch in channels:
        d = folder / ch
        d.mkdir(parents=True, exist_ok=True)
        sums = {(s, c): 0.0 for s in oc.scores for c in (0, 1)}
        counts = {0: 0, 1: 0}
        for k, (_, test) in enumerate(splits):
            done = d / f"fold{k:02d}.npz"
            if not (cfg.resume and done.is_file()):
                model, norm = _fold_model(out / "strategies" / strategy / "folds" / ch / f"fold{k:02d}",
                                          _target_cfg(cfg, strategy))
                x = norm.transform(ds.select(ch).images[test])
                y = ds.labels[test]
                arrays = {"test_subjects": np.asarray(ds.subjects[test], dtype=str)}
                for c in (0, 1):
                    m = y == c
                    arrays[f"n_class{c}"] = np.int64(m.sum())
                    if m.any():
                        maps = occlusion_maps(model, x[m], y[m], patch=oc.patch, stride=oc.stride, fill=oc.fill,
                                              scores=oc.scores, device=device)
                        for s in oc.scores:
                            arrays[f"{s}_class{c}"] = maps[s]
                tmp = d / f"fold{k:02d}.tmp.npz"
                np.savez(tmp, **arrays)
                tmp.replace(done)
                log.info("occlusion %s | %s | outer fold %d/%d: %d test subjects", strategy, ch, k + 1,
                         len(splits), len(test))
            with np.load(done, allow_pickle=False) as z:
                for c in (0, 1):
                    n = int(z[f"n_class{c}"])
                    counts[c] += n
                    for s in oc.scores:
                        if n:
                            sums[(s, c)] = sums[(s, c)] + n * z[f"{s}_class{c}"]
        summary[ch] = {}
        hemi = ch.split("_", 1)[0]
        R = target.rasterizers.get(hemi)
        if R is None and hemi in oc.flatmaps:
            import surfmap

            R = surfmap.Rasterizer(surfmap.FlatMap.load(oc.flatmaps[hemi]), size=ds.images.shape[-1])
        for s in oc.scores:
            for c in (0, 1):
                if not counts[c]:
                    continue
                img = np.asarray(sums[(s, c)], dtype=np.float64) / counts[c]
                np.save(d / f"{s}_class{c}.npy", img)
                entry = {"image": str(d / f"{s}_class{c}.npy"), "n_subjects": counts[c]}
                if R is not None and hasattr(R, "backproject"):
                    from .occlusion import occlusion_to_cortex

                    if hemi in target.meshes:
                        n_vertices = target.meshes[hemi].n_vertices
                    else:  # a template flat map of real data: values for every vertex of the template
                        n_vertices = (getattr(getattr(R, "flatmap", None), "info", None) or {}).get("n_original")
                    gii = d / f"{s}_class{c}.func.gii"
                    values = occlusion_to_cortex(img, R, n_vertices=n_vertices, path=gii, hemi=hemi)
                    entry["gifti"] = str(gii)
                    entry["values"] = values
                summary[ch][f"{s}_class{c}"] = entry
    return summary


def _baselines(target: ExperimentData, splits, cfg: ExperimentConfig, out: Path, progress: Progress) -> dict:
    """The seed's comparison methods on the target folds, one resumable unit each."""
    from .baselines import cnn3d_predictions, pca_svm_predictions, slice_dataset, voxelize

    bc = cfg.baselines
    ds = target.dataset
    schedule = bc.schedule or _stage_schedules(cfg)[1]
    results = {}
    vol = None
    for method in bc.methods:
        folder = out / "baselines" / method
        done = folder / "predictions.csv"
        if cfg.resume and done.is_file():
            results[method] = pd.read_csv(done, dtype={"subject": str})
            continue
        folder.mkdir(parents=True, exist_ok=True)
        if method in ("cnn3d", "slices") and target.cohort is None:
            log.warning("baseline %r needs vertex coordinates (a SYNTHETIC cohort); skipped for image-only data",
                        method)
            continue
        if method in ("cnn3d", "slices") and vol is None:
            vol = _voxels(target, bc.grid, voxelize)
        if method == "pca_svm":
            X = _vertex_features(target)
            df = pca_svm_predictions(X, ds.labels, splits, n_components=bc.pca_components, C=bc.svm_c,
                                     subjects=ds.subjects, seed=cfg.seed)
        elif method == "cnn3d":
            for k, (tr, _) in enumerate(splits):
                progress.plan(len(tr) * schedule.epochs)
            progress.enter(f"baseline 3D CNN | {len(splits)} folds", len(splits[0][0]), schedule.epochs)
            df = cnn3d_predictions(vol, ds.labels, splits, schedule=schedule, width=bc.cnn3d_width,
                                   depth=bc.cnn3d_depth, subjects=ds.subjects, device=cfg.device, seed=cfg.seed,
                                   progress=cfg.progress)
        else:  # slices: 2D networks on the middle slices, stacked (or averaged)
            from .train import cross_validate

            metrics = [f"{h}_{m}" for h in target.cohort.spec.hemis for m in target.cohort.metrics]
            sds = slice_dataset(vol, ds.table.assign(label=ds.labels), metrics)
            sds.groups = ds.groups
            def on_unit(u):
                where = f"outer fold {u['fold'] + 1}/{u['n_folds']}"
                if u["inner"] >= 0:
                    where += f" | inner fold {u['inner'] + 1}/{u['inner_splits']}"
                progress.enter(f"baseline slices | {u['channel']} | {where}", u["n_train"], u["epochs"],
                               u["skipped"])

            r = cross_validate(sds, model_cfg=_target_cfg(cfg, "imagenet"), schedule=schedule, cv=_cv_config(cfg),
                               out_dir=folder / "cv", device=cfg.device, seed=cfg.seed, amp=cfg.amp,
                               progress=cfg.progress, resume=cfg.resume, on_unit=on_unit)
            pred = r["predictions"]
            if cfg.stacking.enabled:
                df = _stack(pred, sds.channels, cfg, folder / "stacking")
            else:
                from .stacking import average_predictions

                df = average_predictions(pred)
        df = df.assign(subject=df["subject"].astype(str))
        from .train import _write_csv

        _write_csv(df, done)
        results[method] = df
    return results


def _vertex_features(target: ExperimentData) -> np.ndarray:
    """Cortex vertex metrics of every hemisphere and metric (SYNTHETIC cohorts), else the image pixels."""
    c = target.cohort
    if c is None:
        return target.dataset.images.reshape(len(target.dataset), -1)
    rows = np.flatnonzero(np.isin(c.table["subject"].astype(str).to_numpy(), target.dataset.subjects))
    blocks = []
    for h in c.spec.hemis:
        cortex = c.templates[h].cortex
        for m in c.metrics:
            blocks.append(c.metric_matrix(h, m, rows)[:, cortex])
    return np.concatenate(blocks, axis=1)


def _voxels(target: ExperimentData, grid: int, voxelize) -> np.ndarray:
    c = target.cohort
    out = []
    for i in range(c.n_subjects):
        chans = []
        for h in c.spec.hemis:
            t = c.templates[h]
            values = np.stack([c.metric_matrix(h, m, [i])[0] for m in c.metrics], axis=1)
            values[~t.cortex] = np.nan
            chans.append(voxelize(np.asarray(t.mesh.vertices), values, grid=grid))
        out.append(np.concatenate(chans))
    return np.stack(out)


def _shuffled(dataset, cv):
    rng = np.random.default_rng([cv.seed, 4242])
    log.info("labels SHUFFLED (null run): every result should be at chance")
    return dataset.with_labels(rng.permutation(dataset.labels))


def run_experiment(cfg: ExperimentConfig) -> dict:
    """Run (or resume) the whole experiment of ``cfg``; returns the report's summary dict.

    Raises
    ------
    ConfigError
        Inconsistent settings, or an output folder holding a run made with other settings.
    DataError
        Cohorts that share subjects, or target channels absent from the source cohort.
    """
    from learn.config import save_resolved

    from . import report

    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume_config(out, cfg)
    save_resolved(cfg, out / "config.resolved.json")
    t0 = time.monotonic()

    target = load_cohort(cfg.target)
    if cfg.cv.shuffle_labels:
        target.dataset = _shuffled(target.dataset, cfg.cv)
    channels = list(target.dataset.channels)
    inits = _source_inits(cfg)
    source = None
    if inits:
        source = load_cohort(cfg.source)
        missing = [c for c in channels if c not in source.dataset.channels]
        if missing:
            raise DataError(f"channels {missing} are in the target but not in the source cohort "
                            f"(source channels: {source.dataset.channels})")
        shared = set(map(str, source.dataset.subjects)) & set(map(str, target.dataset.subjects))
        if shared:
            raise DataError(f"{len(shared)} subject(s) are in both the source and the target cohort: "
                            f"{sorted(shared)[:5]}; stage one would see target test subjects")
    synthetic = target.synthetic or bool(source is not None and source.synthetic)

    from .train import make_splits

    cvc = _cv_config(cfg)
    splits = make_splits(target.dataset, cvc)
    progress = Progress(synthetic)
    src_schedule, tgt_schedule = _stage_schedules(cfg)
    for _ in set(inits.values()):
        progress.plan(len(source.dataset) * src_schedule.epochs * len(channels))
    for _ in cfg.transfer.strategies:
        for tr, _ in splits:
            inner = len(tr) * (cvc.inner_splits - 1) if cvc.inner_splits else 0
            progress.plan((len(tr) + inner) * tgt_schedule.epochs * len(channels))
    log.info("%splan: strategies %s, %d channels, %d outer folds (%s)%s, stage one %s",
             "SYNTHETIC " if synthetic else "", cfg.transfer.strategies, len(channels), len(splits), cvc.scheme,
             f", {cvc.inner_splits} inner folds for stacking" if cvc.inner_splits else "",
             sorted(set(inits.values())) or "none")

    with _attach(progress):
        states = {init: _train_source(source.dataset, channels, init, cfg, out, progress)
                  for init in sorted(set(inits.values()))}
        strategies = {}
        for s in cfg.transfer.strategies:
            r = _run_strategy(target.dataset, channels, s, states.get(inits.get(s)), cfg, out, progress)
            stacked = _stack(r["predictions"], channels, cfg, out / "stacking" / s) if cfg.stacking.enabled else None
            strategies[s] = {"predictions": r["predictions"], "stacked": stacked}
        occ = {}
        if cfg.occlusion.enabled:
            for s in cfg.occlusion.strategies or cfg.transfer.strategies[:1]:
                occ[s] = _occlusion(target, s, cfg.occlusion.channels or channels, splits, cfg, out)
        baselines = _baselines(target, splits, cfg, out, progress) if cfg.baselines.methods else {}

    summary = report.write_report(out, cfg=cfg, strategies=strategies, baselines=baselines, occlusion=occ,
                                  target=target, synthetic=synthetic, splits=splits,
                                  seconds=time.monotonic() - t0)
    return summary


# ---------------------------------------------------------------------------------------------
# predict


def predict_run(run_dir, dataset, *, strategy: str | None = None) -> pd.DataFrame:
    """Score subjects with a finished run's fold ensemble.

    Per channel, the mean over the outer folds' models (each with its own training-fold normaliser); the mean of
    the channels; and, when the run stacked, the mean over folds of each fold's stacker applied to that fold's
    channel probabilities.

    Parameters
    ----------
    run_dir : path
        Output folder of :func:`run_experiment`.
    dataset : SurfaceImageDataset
        New subjects with the run's channels (labels are carried through, not used).
    strategy : str, optional
        Default: the first strategy of the run.

    Returns
    -------
    DataFrame: subject, label, one column per channel, ``mean``, ``stacked`` (if any), ``synthetic``
    """
    import torch

    from learn.config import config_from_dict

    from .train import predict

    run = Path(run_dir)
    path = run / "config.resolved.json"
    if not path.is_file():
        raise DataError(f"{str(run)!r} is not a run folder of `surfmap-learn surface run` (no config.resolved.json)")
    cfg = config_from_dict(ExperimentConfig, json.loads(path.read_text()))
    strategy = strategy or cfg.transfer.strategies[0]
    if strategy not in cfg.transfer.strategies:
        raise ConfigError(f"'strategy' should be one of the run's {cfg.transfer.strategies}; {strategy!r} was provided")
    folds_root = run / "strategies" / strategy / "folds"
    channels = sorted(p.name for p in folds_root.iterdir()) if folds_root.is_dir() else []
    if not channels:
        raise DataError(f"{str(folds_root)!r} holds no fold models; has the run finished?")
    stack_dir = run / "stacking" / strategy
    if (stack_dir / "channels.json").is_file():
        channels = json.loads((stack_dir / "channels.json").read_text())
    missing = [c for c in channels if c not in dataset.channels]
    if missing:
        raise DataError(f"the new subjects lack channel(s) {missing} the run was trained on; they have "
                        f"{dataset.channels}")
    n_folds = len(sorted((folds_root / channels[0]).glob("fold[0-9][0-9]")))
    scores = np.zeros((n_folds, len(channels), len(dataset)))
    mcfg = _target_cfg(cfg, strategy)
    device = torch.device("cpu") if cfg.device == "auto" else cfg.device
    idx = np.arange(len(dataset))
    for j, ch in enumerate(channels):
        ds = dataset.select(ch)
        for k in range(n_folds):
            model, norm = _fold_model(folds_root / ch / f"fold{k:02d}", mcfg)
            scores[k, j] = predict(model, ds.fold(idx, norm), device=device)
    out = pd.DataFrame({"subject": dataset.subjects, "label": dataset.labels})
    for j, ch in enumerate(channels):
        out[ch] = scores[:, j].mean(axis=0)
    out["mean"] = scores.mean(axis=(0, 1))
    stackers = sorted(stack_dir.glob("stacker[0-9][0-9].json"))
    if len(stackers) == n_folds:
        from xgboost import XGBClassifier

        st = []
        for k, f in enumerate(stackers):
            m = XGBClassifier()
            m.load_model(str(f))
            st.append(m.predict_proba(scores[k].T)[:, 1])
        out["stacked"] = np.mean(st, axis=0)
    if "synthetic" in dataset.table.columns:
        out["synthetic"] = dataset.table["synthetic"].to_numpy()
    out.insert(1, "strategy", strategy)
    return out
