"""Stages ``occlusion_reference`` and ``reference_ranking``: the causal reference of a ``kind:
reference`` protocol and every method's agreement with it.

A model trained on its own labels has no ground truth for its maps. Its reference is causal:
Siegel et al. 2025's AtlasOcclusion (``3-compute_explanations/xai_methods.py``; the registered
method :func:`~neuroxai.attribution.occlusion.atlas_occlusion`): each atlas region of the subject
(its segmentation on the model grid) is set to the training mean image's mean over the region, and
the region's *effect* is ``|Δ output| / |region|`` (output units per voxel), the output being the
one the methods explain (``run.target``).

* ``occlusion_reference`` (one folder per task, keyed on the model's fingerprint, the subjects, the
  images, the grid, the target and the batch size): per chunk of ``run.batch_size`` subjects,
  ``chunk_NNNNN.npz`` with each subject's effect per atlas label (NaN: label absent), written
  atomically, so an interrupted run continues at the first missing chunk.
* ``reference_ranking`` (one folder per task × method, keyed on the above, the method and the
  ranking settings): the method's region vector per subject (the ``reference.percentile``-th
  percentile of its map, read as ``scoring.polarity`` / ``sign``, inside each region: the study's
  ranking) and ``subjects.csv``: per subject, Spearman's ρ and rank-biased overlap with the
  occlusion ranking, the RBO of a random ranking (chance) and of the occlusion ranking itself
  (maximum).

The measures are :mod:`neuroxai.scoring.reference`'s; the summaries, verdicts and claims are
:mod:`neuroxai.protocol.causal_reference`'s.
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
from ...atomic import atomic_write
from ..rundir import atomic_savez, stable_hash
from ..store import SubjectStore
from .tasks import explained, predictions, scored_subjects

#: Bump when what the two stages hold changes.
REFERENCE_FORMAT = 1
REFERENCE_METHOD = "atlas_occlusion"


@dataclass
class Effects:
    """The causal reference of one task: ``values (N, L)`` effect per subject and label (NaN: the
    label is absent), the subjects, and the stage key the rankings key on."""

    subject_ids: list[str]
    values: np.ndarray
    key: str


def reference_settings(proto):
    """The protocol's ``reference:`` (its defaults when the section is omitted)."""
    from ..schema import ReferenceSpec

    return proto.reference if proto.reference is not None else ReferenceSpec()


def reference_subjects(ctx: RunContext, task) -> list[str]:
    """The test subjects compared: those the task scores, the first ``reference.n_subjects``."""
    ids = scored_subjects(ctx, task)
    cap = reference_settings(ctx.protocol).n_subjects
    return ids[:cap] if cap else ids


def check_claims(ctx: RunContext) -> None:
    """Every claimed region is a label of the data's atlas (its ``dseg.tsv``, else AAL3): checked
    once the manifest is read, before any model is trained (the embedded cohort's names are checked
    when the protocol loads, :mod:`neuroxai.protocol.settings`)."""
    from ...errors import ConfigError, NeuroXAIError
    from ...tasks.regions import label_table, resolve_regions

    table = label_table(ctx.manifest)
    for i, c in enumerate(reference_settings(ctx.protocol).claims):
        try:
            resolve_regions(c.region, table)
        except NeuroXAIError as exc:
            raise ConfigError(f"reference.claims.{i}.region: {exc.args[0].splitlines()[0]}", expected=exc.expected,
                              found=exc.found, fix="name a label of the data's atlas (dseg.tsv beside the "
                              "segmentations) or give its number") from None


def _pad(arrays: list[np.ndarray]) -> np.ndarray:
    """Chunks of region vectors ``(n_i, L_i)`` stacked, the shorter ones padded with NaN."""
    L = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, ((0, 0), (0, L - a.shape[1])), constant_values=np.nan) for a in arrays])


def _chunked(ctx: RunContext, name: str, key: str, ids: list[str], what: str, work) -> Path:
    """Run ``work(sids, file)`` for each missing chunk of ``ids`` in stage ``name``/``key``."""
    d = ctx.rd.stage(name, key)
    if not ctx.rd.is_done(name, key):
        batches = chunks(ids, ctx.protocol.run.batch_size)
        with ctx.progress.task(what, len(batches)) as bar:
            for ci, sids in enumerate(batches):
                f = d / f"chunk_{ci:05d}.npz"
                if not f.exists():  # a chunk that exists was finished before an interruption
                    work(sids, f)
                    trim()
                bar.advance()
    return d


def _read(d: Path, n: int, field: str) -> tuple[list[str], np.ndarray]:
    sids, vals = [], []
    for ci in range(n):
        z = np.load(d / f"chunk_{ci:05d}.npz")
        sids += [str(s) for s in z["subject_id"]]
        vals.append(z[field])
    return sids, _pad(vals)


def _inputs(ctx: RunContext, task, tm, store: SubjectStore, sids: list[str]):
    """The batch's model input, explained target, atlas and valid voxels."""
    b = store.batch(sids, ctx.device)
    x = task.modify_image(b)
    target, _ = explained(task, sids, predictions(tm.model, x, task.kind), ctx.protocol.run.target, ctx.device)
    atlas = b["segmentation"].round().long()
    valid = b["brain_mask"].bool() if b.get("brain_mask") is not None else None
    return b, x, target, atlas, valid


def occlusion_effects(ctx: RunContext, tid: str, task, tm, store: SubjectStore) -> Effects:
    """Stage ``occlusion_reference``: each subject's effect per atlas label (see module doc)."""
    from ...attribution import attribute
    from ...scoring.region import region_means
    from .attribute import train_mean_image

    p = ctx.protocol
    ids = reference_subjects(ctx, task)
    key = stable_hash([REFERENCE_FORMAT, tid, task.summary(), tm.fingerprint, ids, ctx.manifest_hash, ctx.grid,
                       p.run.target, p.run.batch_size, ctx.device.type])

    def work(sids, f):
        _, x, target, atlas, valid = _inputs(ctx, task, tm, store, sids)
        occ = attribute(tm.model, x, target, REFERENCE_METHOD, atlas=atlas,
                        mean_image=train_mean_image(ctx, task, store),
                        batch_regions=reference_settings(p).batch_regions).float()
        # constant inside each region, so its mean there is the region's effect
        n_lab = int(atlas.max()) + 1
        eff = region_means(occ, atlas, torch.ones_like(atlas, dtype=torch.bool), n_lab)
        atomic_savez(f, subject_id=np.array(sids), effects=eff.cpu().numpy())

    t = time.perf_counter()
    d = _chunked(ctx, "occlusion_reference", key, ids, f"causal atlas occlusion on {tid}", work)
    n = len(chunks(ids, p.run.batch_size))
    if not ctx.rd.is_done("occlusion_reference", key):
        ctx.rd.mark_done("occlusion_reference", key, {"n_chunks": n})
        ctx.timings[f"occlusion_reference_{tid}_s"] = time.perf_counter() - t
    sids, eff = _read(d, n, "effects")
    return Effects(sids, eff, key)


def method_agreement(ctx: RunContext, tid: str, task, tm, store: SubjectStore, mspec, effects: Effects) -> pd.DataFrame:
    """Stage ``reference_ranking``: the method's per-subject agreement with the causal ranking,
    ``subject_id, spearman, rbo, rbo_chance, rbo_max`` (see module doc)."""
    from ...attribution import attribute
    from ...scoring.reference import rbo_chance, rbo_max, region_rbo, region_spearman, region_vector
    from .attribute import method_params

    p, spec = ctx.protocol, reference_settings(ctx.protocol)
    ids = effects.subject_ids
    key = stable_hash([REFERENCE_FORMAT, effects.key, mspec.model_dump(), p.scoring.polarity, p.scoring.sign,
                       spec.percentile, spec.rbo_depth, spec.rbo_p])

    def work(sids, f):
        b, x, target, atlas, valid = _inputs(ctx, task, tm, store, sids)
        attr = attribute(tm.model, x, target, mspec.name, **method_params(ctx, task, store, mspec, None, b)).float()
        v = region_vector(p.scoring.evidence(attr), atlas, valid, q=spec.percentile, n_labels=int(atlas.max()) + 1)
        atomic_savez(f, subject_id=np.array(sids), regions=v.cpu().numpy())

    t = time.perf_counter()
    d = _chunked(ctx, "reference_ranking", key, ids, f"{mspec.key}: regions ranked on {tid}", work)
    if not ctx.rd.is_done("reference_ranking", key):
        n = len(chunks(ids, p.run.batch_size))
        sids, vec = _read(d, n, "regions")
        if sids != ids:  # both stages chunk the same subject list: a mismatch is a corrupted folder
            from ...errors import RunError

            raise RunError("the method's region vectors do not match the occlusion reference's subjects", path=d,
                           expected=ids[:5], found=sids[:5], fix="delete this stage folder and rerun with --resume")
        L = max(vec.shape[1], effects.values.shape[1])
        a = torch.as_tensor(_pad([vec, np.full((0, L), np.nan)]), dtype=torch.float64)
        r = torch.as_tensor(_pad([effects.values, np.full((0, L), np.nan)]), dtype=torch.float64)
        kw = {"depth": spec.rbo_depth, "p": spec.rbo_p}
        table = pd.DataFrame({"subject_id": sids, "spearman": region_spearman(a, r).numpy(),
                              "rbo": region_rbo(a, r, **kw).numpy(), "rbo_chance": rbo_chance(a, r, **kw).numpy(),
                              "rbo_max": rbo_max(a, r, **kw).numpy(),
                              "n_regions": (~a.isnan() & ~r.isnan()).sum(1).numpy()})
        atomic_write(d / "subjects.csv", table.to_csv(index=False))
        ctx.rd.mark_done("reference_ranking", key, {"n_chunks": n})
        ctx.timings[f"reference_ranking_{tid}_{mspec.key}_s"] = time.perf_counter() - t
    return pd.read_csv(d / "subjects.csv", dtype={"subject_id": str})


def reference_stage(ctx: RunContext, tasks: dict, models: dict, store: SubjectStore) -> dict:
    """``{task_id: (Effects, {method_key: per-subject agreement table})}`` for the protocol's task
    (a reference protocol has one) and every method."""
    out = {}
    for tid, task in tasks.items():
        tm = models[tid]
        eff = occlusion_effects(ctx, tid, task, tm, store)
        out[tid] = (eff, {m.key: method_agreement(ctx, tid, task, tm, store, m, eff) for m in ctx.protocol.methods})
    return out
