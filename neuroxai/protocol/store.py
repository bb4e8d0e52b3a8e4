"""The subjects on the model grid, one file per subject and array, read one batch at a time.

Layout of a store stage (``stages/store/<key>/``)::

    index.json                 ids, keys, dtypes, shape, affines (N × 4 × 4), spacing
    <key>/<row:06d>.npy        one uncompressed array per subject: image float32, segmentation
                               int16, masks uint8 (0/1)
    DONE

Written subject by subject (each file atomically; an interrupted store resumes at the first
missing subject), so memory never holds more than one subject while writing, and one batch while
reading: memory does not grow with the number of subjects. ``np.load`` of an uncompressed ``.npy``
is a plain read (no decompression, no pickle); under torchrun each rank reads only the subjects
of its own chunks. The object holds paths only, so it can go to DataLoader worker processes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..atomic import atomic_write

#: on-disk dtype per kind of key (masks as 0/1 bytes; segmentation labels fit int16: AAL3 < 200,
#: FreeSurfer aseg < 3000)
def _disk_dtype(key: str):
    if key == "segmentation":
        return np.int16
    if key.endswith("mask"):
        return np.uint8
    return np.float32


FORMAT = 1


class SubjectStore:
    """All subjects' arrays on the model grid, read per batch: ``batch(ids, device)`` gives
    ``{"subject_id", "affine": (B,4,4) float64, "spacing", <key>: (B,1,D,H,W)}`` (images and
    segmentations float, masks bool)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info = json.loads((self.root / "index.json").read_text())
        self.ids: list[str] = list(info["ids"])
        self.keys: list[str] = list(info["keys"])
        self.shape: tuple[int, ...] = tuple(info["shape"])  # (1, D, H, W)
        self.affines = torch.tensor(info["affines"], dtype=torch.float64)
        self.spacing = tuple(float(s) for s in info["spacing"])
        self.index = {s: i for i, s in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, key: str, row: int) -> Path:
        return self.root / key / f"{row:06d}.npy"

    def read(self, key: str, subject_id: str) -> np.ndarray:
        """One subject's array ``(1, D, H, W)`` as stored."""
        return np.load(self.path(key, self.index[subject_id]), allow_pickle=False)

    def batch(self, subject_ids: list[str], device: torch.device, keys=None) -> dict:
        rows = [self.index[s] for s in subject_ids]
        out = {"subject_id": list(subject_ids), "affine": self.affines[rows], "spacing": self.spacing}
        for k in self.keys:
            if keys is not None and k not in keys:
                continue
            x = torch.from_numpy(np.stack([np.load(self.path(k, r), allow_pickle=False) for r in rows]))
            if device.type == "cuda":
                x = x.pin_memory()
            x = x.to(device, non_blocking=True)
            out[k] = x.bool() if k.endswith("mask") else x.float()
        return out


def write_store(root: Path, items: Callable[[int], dict], n: int, keys: Iterable[str],
                progress=None) -> SubjectStore:
    """Write ``n`` subjects (``items(i)`` → ``{"subject_id", "affine", <key>: (1,D,H,W)}``) into
    ``root`` one at a time. A subject's ``meta/<row>.json`` is written after its arrays, so a
    subject with it is complete and is skipped when an interrupted write resumes."""
    root = Path(root)
    keys = list(keys)
    for k in (*keys, "meta"):
        (root / k).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        meta = root / "meta" / f"{i:06d}.json"
        if not meta.is_file():
            it = items(i)
            shape = None
            for k in keys:
                arr = np.asarray(torch.as_tensor(it[k]).cpu().numpy()).astype(_disk_dtype(k), copy=False)
                arr = arr[None] if arr.ndim == 3 else arr
                shape = shape or list(arr.shape)
                _atomic_npy(root / k / f"{i:06d}.npy", arr)
            atomic_write(meta, json.dumps({"id": str(it["subject_id"]), "shape": shape,
                                           "affine": np.asarray(it["affine"], dtype=np.float64).tolist()}))
        if progress:
            progress()
    metas = [json.loads((root / "meta" / f"{i:06d}.json").read_text()) for i in range(n)]
    a = np.asarray(metas[0]["affine"])
    atomic_write(root / "index.json", json.dumps({
        "format": FORMAT, "ids": [m["id"] for m in metas], "keys": keys, "shape": metas[0]["shape"],
        "affines": [m["affine"] for m in metas], "spacing": np.sqrt((a[:3, :3] ** 2).sum(0)).tolist()}))
    return SubjectStore(root)


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, write=lambda tmp: np.save(tmp, np.ascontiguousarray(arr), allow_pickle=False))
