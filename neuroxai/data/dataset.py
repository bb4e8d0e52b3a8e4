"""A MONAI-backed dataset of subjects on the model grid, with in-memory or on-disk caching.

Each item is ``{"subject_id": str, "image": (1,D,H,W) float32, <mask keys>: (1,D,H,W) bool,
"segmentation": (1,D,H,W) float32 label values, "affine": (4,4) float64}``: the image reoriented
to RAS+, resampled to the model spacing (trilinear; label maps and masks nearest), centre
cropped/padded to the model shape, intensity-normalized inside the brain mask.

Caching: ``cache="memory"`` (``monai.data.CacheDataset``) or ``cache="disk"``
(``monai.data.PersistentDataset``) keyed on the *content* of every input file plus the transform
parameters, so an edited file or another grid never reuses a stale item.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.transforms import Transform

from ..errors import ConfigError, ManifestError
from .manifest import _file_digest
from .transforms import crop_or_pad, normalize_intensity, resample, resample_like
from .volume import check_same_grid, load_volume

log = logging.getLogger(__name__)

MASK_KEYS = ("lesion_mask", "brain_mask", "signal_mask")
LABEL_KEYS = ("segmentation",)
CACHES = ("none", "memory", "disk")


class LoadSubject(Transform):
    """MONAI transform: a manifest row (dict of paths) → tensors on the model grid.

    Args:
        keys: which path columns to load (``"image"`` first).
        spacing: model voxel spacing in mm (``None``: keep the file's).
        shape: model grid shape in voxels (``None``: keep the resampled shape).
        normalize: ``"zscore"``, ``"percentile"`` or ``None``; statistics inside the brain mask
            (or the non-zero voxels when no brain mask is given).
    """

    def __init__(self, keys: Sequence[str] = ("image",), spacing: float | Sequence[float] | None = None,
                 shape: Sequence[int] | None = None, normalize: str | None = "zscore"):
        self.keys = tuple(keys)
        self.spacing = spacing
        self.shape = tuple(shape) if shape is not None else None
        self.normalize = normalize

    def params(self) -> dict:
        return {"keys": list(self.keys), "spacing": self.spacing, "shape": self.shape,
                "normalize": self.normalize, "version": 1}

    def __call__(self, row: dict) -> dict:
        img = load_volume(row["image"])
        native = img
        if self.spacing is not None:
            img = resample(img, self.spacing, mode="bilinear")
        if self.shape is not None:
            img = crop_or_pad(img, self.shape)
        out = {"subject_id": str(row["subject_id"]),
               "affine": torch.as_tensor(img.affine, dtype=torch.float64)}
        for k in self.keys:
            if k == "image":
                continue
            p = row.get(k)
            if p is None or (isinstance(p, float) and np.isnan(p)):
                raise ManifestError(f"subject {row['subject_id']} has no {k}", path=row["image"],
                                    expected=f"a {k} path for every subject", found="empty cell",
                                    fix=f"fill the {k} column, or drop the task that needs it")
            v = load_volume(p)
            check_same_grid(native, v, what=k.replace("_", " "))
            v = resample_like(v, img, mode="nearest")
            out[k] = (v.data > 0.5) if k in MASK_KEYS else v.data.round()
        x = img.data
        if self.normalize:
            brain = out.get("brain_mask", x != 0)
            x = normalize_intensity(x, brain, method=self.normalize)
        out["image"] = x.float().contiguous()
        return out


class VolumeDataset(torch.utils.data.Dataset):
    """Subjects of a manifest as model-ready tensors (see module doc).

    Args:
        manifest: a validated manifest (``load_manifest``).
        keys: columns to load; ``"image"`` is always loaded.
        spacing, shape, normalize: the model grid and intensity normalization.
        cache: ``"none"``, ``"memory"`` or ``"disk"``.
        cache_dir: folder of the on-disk cache (required for ``"disk"``).
    """

    def __init__(self, manifest: pd.DataFrame, keys: Sequence[str] = ("image",), *,
                 spacing: float | Sequence[float] | None = None, shape: Sequence[int] | None = None,
                 normalize: str | None = "zscore", cache: str = "none", cache_dir: str | Path | None = None,
                 num_workers: int = 0):
        keys = ("image",) + tuple(k for k in keys if k != "image")
        missing = [k for k in keys if k not in manifest.columns]
        if missing:
            raise ManifestError("the manifest lacks columns the tasks need", path=manifest.attrs.get("source"),
                                expected=f"columns {list(keys)}", found=f"columns {list(manifest.columns)}",
                                fix=f"add {missing} to the manifest")
        if cache not in CACHES:
            raise ConfigError("unknown cache mode", expected=list(CACHES), found=cache)
        if shape is None and len(manifest) > 1:
            shape = self._common_shape(manifest, spacing)
        self.transform = LoadSubject(keys, spacing, shape, normalize)
        rows = [{k: r[k] for k in ("subject_id",) + keys} for r in manifest.to_dict("records")]
        if cache == "memory":
            self._ds = CacheDataset(rows, self.transform, num_workers=num_workers, progress=False)
        elif cache == "disk":
            if cache_dir is None:
                raise ConfigError("cache='disk' needs cache_dir", expected="a folder", found=None)
            params = json.dumps(self.transform.params(), sort_keys=True, default=str)
            self._ds = PersistentDataset(rows, self.transform, cache_dir=cache_dir,
                                         hash_func=lambda item: _content_key(item, keys, params))
        else:
            self._ds = Dataset(rows, self.transform)

    @staticmethod
    def _common_shape(manifest: pd.DataFrame, spacing) -> tuple[int, int, int] | None:
        """The model grid when ``shape`` is not given: every subject must resample to one shape."""
        import nibabel as nib

        shapes = set()
        for p in manifest["image"]:
            img = nib.load(p)
            zooms = np.asarray(img.header.get_zooms()[:3], float)
            ext = np.asarray(img.shape[:3]) * zooms
            sp = np.broadcast_to(np.asarray(spacing if spacing else zooms, float), (3,))
            shapes.add(tuple(np.maximum(1, np.round(ext / sp - 1e-6)).astype(int)))
            if len(shapes) > 1:
                break
        if len(shapes) > 1:
            shape = tuple(int(s) for s in np.max(np.array(sorted(shapes)), axis=0))
            log.warning("images resample to different shapes %s; using %s (centre crop/pad). Set "
                        "data.shape in the protocol to choose.", sorted(shapes), shape)
            return shape
        return None

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> dict:
        return self._ds[i]


def _content_key(item: dict, keys, params: str) -> bytes:
    h = hashlib.sha256(params.encode())
    for k in keys:
        p = item.get(k)
        if isinstance(p, str):
            h.update(f"{k}:{_file_digest(p)}".encode())
    return h.hexdigest().encode()


def make_loader(ds: torch.utils.data.Dataset, *, batch_size: int = 8, shuffle: bool = False,
                num_workers: int = 0, seed: int = 0, device: str = "cpu") -> DataLoader:
    """A MONAI DataLoader (pinned memory when the device is CUDA; seeded shuffling)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=g, pin_memory=device.startswith("cuda"),
                      persistent_workers=num_workers > 0)
