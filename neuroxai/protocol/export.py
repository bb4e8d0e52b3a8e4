"""Export a run's maps and ground truth as a prior study would have saved them, for `neuroxai audit`.

Layout (BIDS derivatives, one pipeline folder per task)::

    OUT/derivatives/xai-<task>/sub-XXXX/anat/sub-XXXX_desc-<method>_saliency.nii.gz
    OUT/derivatives/groundtruth-<task>/sub-XXXX/anat/sub-XXXX_desc-<task>_mask.nii.gz
    OUT/derivatives/brain/sub-XXXX/anat/sub-XXXX_desc-brain_mask.nii.gz

Maps are the attribute stage's saved maps (float16 in the chunks, written as float32) on the
model grid with each subject's affine; the ground truth is the task's mask the scores used.
Baselines (random, oracle) are not exported: an audit computes its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.bids import bids_label, saliency_name
from ..data.volume import save_volume
from ..errors import ManifestError, RunError
from ..outdir import claim_dir
from ..safepath import inside, own_dir, safe_name
from ..attribution.baselines import is_baseline
from .stages.tasks import is_null, scored_subjects


def export_run(ctx, tasks: dict, store, out_dir: str | Path, attributed) -> Path:
    """Write every non-null task's maps, ground-truth masks and brain masks under ``out_dir``
    (``attributed``: the attribute stage's :class:`~neuroxai.protocol.stages.attribute.Attributed`,
    whose folders hold the maps)."""
    if ctx.protocol.run.save_maps != "npz16":
        raise RunError("exporting maps needs the maps saved in the run", expected="run.save_maps: npz16",
                       found=f"run.save_maps: {ctx.protocol.run.save_maps}",
                       fix="set run.save_maps: npz16 in the protocol (nifti maps are already NIfTI files "
                           "in stages/attribute/*/maps/)")
    out = claim_dir(out_dir, "export")
    deriv = own_dir(out, "derivatives")
    for tid, task in tasks.items():
        if is_null(tid):
            continue
        ids = scored_subjects(ctx, task)
        names = subject_names(ids)
        label = bids_label(tid)
        for c in range(0, len(ids), ctx.protocol.run.batch_size):
            sids = ids[c:c + ctx.protocol.run.batch_size]
            b = store.batch(sids, torch.device("cpu"))
            gt = task.ground_truth(b)
            for i, sid in enumerate(sids):
                aff = b["affine"][i].numpy()
                n = names[sid]
                save_volume(gt[i, 0], aff, _file(deriv, f"groundtruth-{label}", n, f"{n}_desc-{label}_mask.nii.gz"),
                            np.uint8)
                if "brain_mask" in b:
                    save_volume(b["brain_mask"][i, 0], aff,
                                _file(deriv, "brain", n, f"{n}_desc-brain_mask.nii.gz"), np.uint8)
        affines = {s: store.affines[store.index[s]].numpy() for s in ids}
        for mspec in ctx.protocol.methods:
            if is_baseline(mspec.name):
                continue
            d = attributed.folder(tid, mspec.key)
            for f in sorted(d.glob("chunk_*.npz")):
                z = np.load(f)
                for sid, m in zip(z["subject_id"], z["maps"]):
                    sid = str(sid)
                    n = names[sid]
                    save_volume(m, affines[sid], _file(deriv, f"xai-{label}", n, saliency_name(n, mspec.key)))
    return out


def subject_names(ids, path=None) -> dict:
    """``{subject id: file-name-safe id}`` (:func:`~neuroxai.safepath.safe_name`); two ids that
    would share a file name (``a/b`` and ``a_b``) are a :class:`ManifestError`, since the audit
    reads the subject back from the file name."""
    names = {str(s): safe_name(s) for s in ids}
    by_name: dict = {}
    for s, n in names.items():
        by_name.setdefault(n, []).append(s)
    clash = {n: ss for n, ss in by_name.items() if len(ss) > 1}
    if clash:
        n, ss = next(iter(clash.items()))
        raise ManifestError("two subject ids would be exported under the same file name", path=path,
                            expected="subject ids that differ in letters, digits, '.', '_' or '-'",
                            found=f"{', '.join(repr(s) for s in ss[:3])} → {n!r}",
                            fix="rename one of these subjects in the manifest")
    return names


def _file(deriv: Path, pipeline: str, sid_name: str, name: str) -> Path:
    """``deriv/<pipeline>/<sid>/anat/<name>``: real folders (a symlink there is replaced, not
    followed), and the file checked to stay inside ``deriv``."""
    own_dir(deriv, pipeline, sid_name, "anat")
    return inside(deriv, pipeline, sid_name, "anat", name)
