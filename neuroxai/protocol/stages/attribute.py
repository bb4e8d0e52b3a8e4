"""Stage ``attribute``: every method's maps on every task's scored test subjects, scored on the
device chunk by chunk.

One stage folder per (task, method), keyed by :func:`attribute_key` on the content of its inputs:
the method, the model's fingerprint, the subjects, the images (manifest hash), the grid, the
task, the batch size (chunk boundaries), the device type, the scoring settings and metrics, the
``save_maps`` mode and ``run.target``. Each chunk of ``run.batch_size`` subjects is one ``chunk_NNNNN.npz``
(scores, each subject's label, prediction and explained target (``run.target``), distance
profiles, the sum of unit-mass maps for the cohort-mean figure and, with ``save_maps: npz16``, the
maps), written atomically: a run killed mid-stage resumes at the first
missing chunk. Under torchrun the chunks are sharded across ranks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..._memory import trim
from ..context import RunContext, chunks
from ..distributed import barrier
from ..rundir import atomic_savez, stable_hash
from ..store import SubjectStore
from ...report.scores import ScoreTable, ScoreWriter
from ...scoring.profile import ProfileMeans
from ...attribution.baselines import BASELINES as BASELINE_METHODS, is_baseline, needs  # noqa: F401 (re-exported)
from .tasks import explained, is_null, predictions, scored_subjects

#: Bump when what an attribute chunk holds changes, so stale chunks are never mixed in.
#: 3: label, prediction and the explained target per subject.
ATTRIBUTE_FORMAT = 3


def attribute_key(ctx: RunContext, task_id: str, task, mspec, tm) -> str:
    """The stage key of ``mspec`` on ``task`` (folder ``stages/attribute/<key>``): read by the
    loop below, the figures and the export."""
    p = ctx.protocol
    # Content, not paths: the model's weights, the images (manifest hash), the grid, the task,
    # the batch size (chunk boundaries) and the device type. Any change starts a new stage folder.
    # run.target decides what the maps explain: a resume never mixes targets.
    return stable_hash([ATTRIBUTE_FORMAT, task_id, mspec.model_dump(), tm.fingerprint, scored_subjects(ctx, task),
                        ctx.manifest_hash, ctx.grid, task.summary(), p.run.batch_size, ctx.device.type,
                        p.scoring.model_dump(), [m.model_dump() for m in p.metrics], p.run.save_maps,
                        p.run.target])


@dataclass(frozen=True)
class Attributed:
    """What the attribute stage hands on: ``chunks[task]``, each method's ``(key, stage folder,
    number of chunks)`` (read by :func:`write_scores`, the figures and the export: the one place
    the stage's keys are computed), and ``profiles[task][method]`` the cohort's relevance-by-distance
    profile ``(relevance (1,K), volume (1,K))``."""

    chunks: dict
    profiles: dict

    def folder(self, task_id: str, method_key: str) -> Path | None:
        """The stage folder of ``method_key`` on ``task_id`` (None if it did not run there)."""
        return next((d for k, d, _ in self.chunks.get(task_id, []) if k == method_key), None)


def attribute_and_score(ctx: RunContext, tasks: dict, models: dict, store: SubjectStore) -> Attributed:
    """Attribute and score every method on every task (null tasks included), chunk by chunk into
    the stage folders (:class:`Attributed`)."""
    out: dict = {}
    profs: dict[str, ProfileMeans] = {}
    for task_id, task in tasks.items():
        tm = models[task_id]
        ids = scored_subjects(ctx, task)
        batches = chunks(ids, ctx.protocol.run.batch_size)
        done = []
        preds: dict = {}  # the model's prediction per subject: one forward per task, not per method
        for mspec in ctx.protocol.methods:
            if is_null(task_id) and is_baseline(mspec.name):
                continue  # a model-free map is the same on both models
            key = attribute_key(ctx, task_id, task, mspec, tm)
            d = ctx.rd.stage("attribute", key)
            if not ctx.rd.is_done("attribute", key):
                t = time.perf_counter()
                with ctx.progress.task(f"{mspec.key} on {task_id}", len(batches)) as bar:
                    for ci, sids in enumerate(batches):
                        f = d / f"chunk_{ci:05d}.npz"
                        # torchrun: chunks sharded across ranks; a chunk that exists was finished
                        # before an interruption
                        if ci % ctx.world == ctx.rank and not f.exists():
                            _attribute_chunk(ctx, task, tm, mspec, store, sids, f, preds)
                            trim()  # same-sized batches must not creep upwards (see _memory.py)
                        bar.advance()
                ctx.timings[f"attribute_{task_id}_{mspec.key}_s"] = time.perf_counter() - t
                barrier(ctx)
                if ctx.rank == 0:
                    ctx.rd.mark_done("attribute", key, {"n_chunks": len(batches)})
                barrier(ctx)
            _read_profiles(d, len(batches), mspec.key, profs.setdefault(task_id, ProfileMeans()))
            done.append((mspec.key, d, len(batches)))
        out[task_id] = done
    return Attributed(out, {tid: p.means() for tid, p in profs.items()})


def write_scores(path: Path, runs: list[tuple[int | None, Attributed]]) -> ScoreTable:
    """Stream the attribute chunks of every ``(seed, attribute_and_score's output)`` into the score
    table at ``path`` (a chunk at a time: the table is never held whole) and return it; a
    several-seed run's rows carry their ``seed``."""
    seeded = len(runs) > 1
    with ScoreWriter(path, SUBJECT_COLUMNS + (("seed",) if seeded else ())) as w:
        for seed, attributed in runs:
            for task_id, done in attributed.chunks.items():
                for key, d, n_chunks in done:
                    for ci in range(n_chunks):
                        df = chunk_frame(d / f"chunk_{ci:05d}.npz", key).assign(task=task_id)
                        w.write(df.assign(seed=seed) if seeded else df)
    return ScoreTable(path)


def _attribute_chunk(ctx: RunContext, task, tm, mspec, store: SubjectStore, sids: list[str], f: Path,
                     preds: dict | None = None) -> None:
    """Attribute, score and write one chunk to ``f`` (its tensors are freed on return).
    ``preds``: ``{subject: prediction}`` of the task's model, filled as chunks need it."""
    from ...attribution import attribute
    from ...scoring.chunk import chunk_profiles

    p = ctx.protocol
    b = store.batch(sids, ctx.device)
    x = task.modify_image(b)
    preds = {} if preds is None else preds
    if any(s not in preds for s in sids):
        preds.update(zip(sids, predictions(tm.model, x, task.kind)))
    target, record = explained(task, sids, np.asarray([preds[s] for s in sids]), p.run.target, ctx.device)
    gt = task.ground_truth(b)
    params = method_params(ctx, task, store, mspec, gt, b)
    t_a = _now(ctx.device)
    attr = attribute(tm.model, x, target, mspec.name, **params).float()
    t_s = _now(ctx.device)
    s = score_metrics(attr, gt, p.metrics, p.scoring, brain_mask=b.get("brain_mask"), spacing=store.spacing,
                      task_params=getattr(task, "metric_params", {}) or {}, **_atlas_kwargs(ctx, b, task))
    sc = chunk_profiles(attr, gt, p.scoring, brain=b.get("brain_mask"), spacing=store.spacing, scores=s)
    t_e = _now(ctx.device)
    # the split the "scoring < 5 % of attribution" is checked against
    ctx.timings["attribution_s"] = ctx.timings.get("attribution_s", 0.0) + t_s - t_a
    ctx.timings["scoring_s"] = ctx.timings.get("scoring_s", 0.0) + t_e - t_s
    arrays = {f"score__{k}": v.detach().cpu().double().numpy() for k, v in sc.scores.items()}
    arrays.update({f"subject__{k}": v for k, v in record.items()})  # label, prediction, target
    arrays["profile_relevance"] = sc.profile_relevance.cpu().numpy()
    arrays["profile_volume"] = sc.profile_volume.cpu().numpy()
    arrays["mean_map_sum"] = sc.mean_map_sum.cpu().numpy().astype(np.float32)
    if p.run.save_maps == "npz16":
        arrays["maps"] = attr[:, 0].cpu().numpy().astype(np.float16)
    elif p.run.save_maps == "nifti":
        save_nifti_maps(f.parent / "maps", sids, attr, b["affine"], mspec.key)
    atomic_savez(f, subject_id=np.array(sids), **arrays)


#: ``baseline: train_mean`` of a method whose reference input is an image (DeepLift, integrated
#: gradients): the training-split mean image of the task, resolved here (the method sees a tensor)
TRAIN_MEAN = "train_mean"


def method_params(ctx: RunContext, task, store: SubjectStore, mspec, gt: torch.Tensor | None = None,
                  batch: dict | None = None) -> dict:
    """``mspec.params`` as the method is called with them on ``task``, with what its registration
    says it needs: ``mask`` the ground truth ``gt``, ``atlas`` the batch's segmentation,
    ``mean_image`` the task's training-split mean image (:func:`train_mean_image`); and
    ``baseline: train_mean`` becomes that image."""
    params = dict(mspec.params)
    need = needs(mspec.name)
    if "mask" in need and gt is not None:
        params["mask"] = gt
    if "atlas" in need and batch is not None and batch.get("segmentation") is not None:
        params["atlas"] = batch["segmentation"].long()
    if "mean_image" in need:
        params["mean_image"] = train_mean_image(ctx, task, store)
    if isinstance(params.get("baseline"), str) and params["baseline"] == TRAIN_MEAN:
        params["baseline"] = train_mean_image(ctx, task, store)
    return params


def train_mean_image(ctx: RunContext, task, store: SubjectStore) -> torch.Tensor:
    """The task's *mean image*: the voxel-wise mean of its training-split subjects' model inputs
    (normalized, on the model grid, after the task's image modification — what the model was
    trained on), ``(1,1,D,H,W)`` float32 on the run's device; computed once per task and run
    (the same image the ground-truth validity check fills with). Siegel et al. 2025's DeepLift
    reference ``DeepLift_mean_img`` is their training images' mean."""
    from ..validity import mean_image

    key = id(task)  # the run's task objects live as long as the run
    cache = ctx.train_means
    if key not in cache:
        train = [s for s, sp in zip(task.subject_ids, task.split) if sp == "train"]
        cache[key] = mean_image(task.modify_image(store.batch(c, ctx.device))
                                for c in chunks(train, ctx.protocol.run.batch_size))
    return cache[key]


def _atlas_kwargs(ctx: RunContext, batch: dict, task) -> dict:
    """The atlas inputs of :func:`score_metrics`: the segmentation, the task's true regions and the
    left/right pairs (an atlas need is met by these, else that metric is skipped)."""
    atlas, true = batch.get("segmentation"), getattr(task, "region_ids", None)
    pairs = _lateral_pairs(ctx) if atlas is not None and true else None
    return {"atlas": None if atlas is None else atlas.long(), "true_region": true, "lateral_pairs": pairs}


def score_metrics(attr: torch.Tensor, gt: torch.Tensor, metrics, scoring, *, brain_mask=None,
                  spacing=(1.0, 1.0, 1.0), atlas=None, true_region=None, lateral_pairs=None,
                  task_params: dict | None = None) -> dict:
    """Every metric entry of a protocol (``metrics``: :class:`~neuroxai.protocol.schema.MetricSpec`
    list) scored on ``attr: (B,1,D,H,W)`` against ``gt``, each under its own scoring (its
    ``scoring:``, else the protocol's ``scoring``), with one :func:`neuroxai.scoring.score` call —
    one preprocessing of the maps — per distinct scoring. The keys are named by each entry's key
    (its label, else its name): ``KEY``, ``KEY_chance``, ``KEY_norm`` and the metric's extra keys
    with ``KEY`` in place of its name (``region_match`` labelled ``rm`` gives ``rm_weak``).
    ``task_params``: ``{metric: params}`` a task gives its metrics (brain age: the true ordering as
    ``rank_biased_overlap``'s reference), over the entry's own."""
    from ...scoring import score
    from ...scoring.localization import metric_params

    groups: list[tuple[str, object, list]] = []  # (scoring's canonical form, scoring, entries)
    for m in metrics:
        sc = m.scoring_of(scoring)
        canon = stable_hash(sc.model_dump(exclude={"profile_distances_mm"}))
        # one call per scoring; a metric repeated under the same scoring (other params) needs another
        g = next((g for g in groups if g[0] == canon and all(e.name != m.name for e in g[2])), None)
        if g is None:
            groups.append((canon, sc, [m]))
        else:
            g[2].append(m)
    out: dict = {}
    for _, sc, entries in groups:
        own = task_params or {}
        params = metric_params({m.name: {**m.params, **own.get(m.name, {})} for m in entries}, sc, atlas=atlas,
                               true_region=true_region, lateral_pairs=lateral_pairs)
        if not params:
            continue
        s = score(attr, gt, params, brain_mask=brain_mask if sc.restrict_to_brain else None, spacing=spacing,
                  **sc.score_options(), atlas=atlas, true_region=true_region, lateral_pairs=lateral_pairs)
        for k, v in s.items():
            # the entry whose name starts the key (the longest, should one name start another)
            m = max((m for m in entries if k == m.name or k.startswith(m.name + "_")), key=lambda m: len(m.name))
            out[m.key + k[len(m.name):]] = v
    return out


def _lateral_pairs(ctx: RunContext) -> dict[int, int]:
    """Left/right label pairs (contralateral ground truth, merged region rankings), from the label
    names of the cohort's table (``dseg.tsv`` beside the segmentations, else AAL3 + aseg)."""
    from ...tasks.regions import label_table, lateral_pairs

    return lateral_pairs(label_table(ctx.manifest))  # a few hundred names: cheap per chunk


def _now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def save_nifti_maps(folder: Path, sids: list[str], attr: torch.Tensor, affines: torch.Tensor, method: str) -> None:
    """One float32 NIfTI per subject on the model grid, each written atomically, under the
    BIDS-derivatives name ``neuroxai audit`` reads (:func:`~neuroxai.data.bids.saliency_name`)."""
    from ...data.bids import saliency_name
    from ...data.volume import save_volume
    from ...safepath import inside

    for i, sid in enumerate(sids):
        save_volume(attr[i, 0], affines[i].cpu().numpy(), inside(folder, saliency_name(sid, method)))


def chunk_frame(f: Path, method_key: str) -> pd.DataFrame:
    """One chunk's scores as rows ``subject_id, method, metric, value, label, prediction, target``."""
    z = np.load(f)
    sids = [str(s) for s in z["subject_id"]]
    per = {c: (z[f"subject__{c}"] if f"subject__{c}" in z.files else np.full(len(sids), np.nan))
           for c in SUBJECT_COLUMNS}
    keys = [k for k in z.files if k.startswith("score__")]
    n = len(sids)
    return pd.DataFrame({
        "subject_id": sids * len(keys), "method": method_key,
        "metric": np.repeat([k[len("score__"):] for k in keys], n),
        "value": np.concatenate([z[k].astype(np.float64) for k in keys]) if keys else np.zeros(0),
        **{c: np.tile(_numeric(v), len(keys)) for c, v in per.items()}})


def _numeric(v: np.ndarray) -> np.ndarray:
    """A chunk's per-subject column as float64 (an empty text or None is NaN)."""
    return pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(np.float64)


def _read_profiles(d: Path, n_chunks: int, key: str, into: ProfileMeans) -> None:
    """Add the chunks' distance profiles of method ``key`` to ``into``, a chunk at a time."""
    for ci in range(n_chunks):
        z = np.load(d / f"chunk_{ci:05d}.npz")
        if "profile_relevance" in z.files:
            into.add(key, z["profile_relevance"], z["profile_volume"])


#: per-subject columns of the score table: the true label, the model's prediction (class, or the
#: regression output) and the class whose output the map explains (``run.target``; empty for
#: regression)
SUBJECT_COLUMNS = ("label", "prediction", "target")


def profiles(ctx: RunContext, tasks: dict, attributed: Attributed) -> dict:
    """Cohort-mean relevance-by-distance profile per task (read with the chunks):
    ``{task: DistanceProfile}``."""
    from ..verdict import cohort_profile

    return {tid: cohort_profile(ctx.protocol.scoring.profile_distances_mm, attributed.profiles.get(tid, {}))
            for tid in tasks if not is_null(tid)}
