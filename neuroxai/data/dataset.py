"""A MONAI-backed dataset of subjects on the model grid, with in-memory or on-disk caching.

Each item is ``{"subject_id": str, "image": (1,D,H,W) float32, <mask keys>: (1,D,H,W) bool,
"segmentation": (1,D,H,W) float32 label values, "affine": (4,4) float64}``: the image reoriented
to RAS+, resampled to the model spacing (trilinear; label maps and masks nearest), centre
cropped/padded to the model shape, intensity-normalized inside the brain mask.

Masks (every key ending in ``mask``) are binarized: voxels ``> mask_threshold`` (default 0.5) are
in the mask. A mask file holding other values than 0 and 1 (a probabilistic mask, a 0/255 mask)
is logged once per dataset, with the file and the threshold used.

Errors: a problem with one subject's files is raised as the named :class:`NeuroXAIError` that
describes it (NaN voxels, affine mismatch, corrupt file...), not as MONAI's ``RuntimeError:
applying transform``; that wrapper stays attached as the error's ``__cause__``.

Caching: ``cache="memory"`` (``monai.data.CacheDataset``) or ``cache="disk"``
(``monai.data.PersistentDataset``) keyed on the *content* of every input file plus the transform
parameters, so an edited file or another grid never reuses a stale item.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from monai.transforms import Transform

from ..errors import ConfigError, ManifestError, NeuroXAIError, VolumeFileError, named_error
from .manifest import _file_digest
from .transforms import crop_or_pad, normalize_intensity, resample, resample_like
from .volume import check_same_grid, load_volume, read_header

log = logging.getLogger(__name__)

MASK_KEYS = ("lesion_mask", "brain_mask", "signal_mask")
LABEL_KEYS = ("segmentation",)
CACHES = ("none", "memory", "disk")


def is_mask_key(key: str) -> bool:
    """Columns binarized on load: every key ending in ``mask`` (``lesion_mask``, ``brain_mask``...)."""
    return key.endswith("mask")


def _check_threshold(mask_threshold) -> float:
    try:
        t = float(mask_threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if not math.isfinite(t) or isinstance(mask_threshold, bool):
        raise ConfigError("mask_threshold must be a finite number", expected="e.g. 0.5 (voxels > "
                          "threshold are in the mask)", found=repr(mask_threshold))
    return t


def _subject_files(row: dict, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={row.get(k)}" for k in keys if k in row)


def _subject_error(row: dict | None, keys: Sequence[str], exc: BaseException) -> NeuroXAIError:
    """A named error for an unexpected exception while loading one subject."""
    if row is None:
        return VolumeFileError("cannot load a subject", expected="readable NIfTI files",
                               found=f"{type(exc).__name__}: {exc}",
                               fix="run `neuroxai check-manifest` on the manifest")
    return VolumeFileError(
        f"cannot load subject {row.get('subject_id')!r}", path=row.get("image"),
        expected=f"readable NIfTI files for {list(keys)}",
        found=f"{type(exc).__name__}: {exc} (files: {_subject_files(row, keys)})",
        fix="check each file with `neuroxai info FILE`, and the manifest with `neuroxai check-manifest`")


class LoadSubject(Transform):
    """MONAI transform: a manifest row (dict of paths) → tensors on the model grid.

    Args:
        keys: which path columns to load (``"image"`` first).
        spacing: model voxel spacing in mm (``None``: keep the file's).
        shape: model grid shape in voxels (``None``: keep the resampled shape).
        normalize: ``"zscore"``, ``"percentile"`` or ``None``; statistics inside the brain mask
            (or the non-zero voxels when no brain mask is given).
        mask_threshold: voxels ``> mask_threshold`` of a mask file are in the mask (keys ending
            in ``mask``), compared on the file's values before nearest-neighbour resampling.
            A mask that is not binary is logged once (file and threshold).

    Any error loading a row is a :class:`NeuroXAIError` naming the file (unexpected exceptions
    become a :class:`VolumeFileError` naming the subject and its files).
    """

    def __init__(self, keys: Sequence[str] = ("image",), spacing: float | Sequence[float] | None = None,
                 shape: Sequence[int] | None = None, normalize: str | None = "zscore",
                 mask_threshold: float = 0.5):
        self.keys = tuple(keys)
        self.spacing = spacing
        self.shape = tuple(shape) if shape is not None else None
        self.normalize = normalize
        self.mask_threshold = _check_threshold(mask_threshold)
        self._warned_not_binary = False

    def params(self) -> dict:
        return {"keys": list(self.keys), "spacing": self.spacing, "shape": self.shape,
                "normalize": self.normalize, "mask_threshold": self.mask_threshold, "version": 2}

    def _binarize(self, data: torch.Tensor, path: str | None, key: str) -> torch.Tensor:
        if self._warned_not_binary:
            return data > self.mask_threshold
        not_binary = (data != 0) & (data != 1)
        if bool(not_binary.any()):
            self._warned_not_binary = True
            n_in = int((data > self.mask_threshold).sum())
            log.warning(
                "%s: the %s is not binary (values in [%g, %g], %d of %d voxels neither 0 nor 1); "
                "voxels > %g (mask_threshold) count as inside: %d voxels. Further non-binary masks "
                "of this dataset are thresholded the same way without another warning.",
                path, key.replace("_", " "), float(data.min()), float(data.max()),
                int(not_binary.sum()), data.numel(), self.mask_threshold, n_in)
        return data > self.mask_threshold

    def __call__(self, row: dict) -> dict:
        try:
            return self._load(row)
        except NeuroXAIError:
            raise
        except Exception as exc:  # a library error while loading this subject: name the subject
            raise _subject_error(row, self.keys, exc) from exc

    def _load(self, row: dict) -> dict:
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
            if p is None or (isinstance(p, float) and np.isnan(p)) or p is pd.NA:
                raise ManifestError(f"subject {row['subject_id']} has no {k}", path=row["image"],
                                    expected=f"a {k} path for every subject", found="empty cell",
                                    fix=f"fill the {k} column, or drop the task that needs it")
            v = load_volume(p)
            check_same_grid(native, v, what=k.replace("_", " "))
            if is_mask_key(k):
                v = v.with_data(self._binarize(v.data, v.path, k).to(v.data.dtype))
                out[k] = resample_like(v, img, mode="nearest").data > 0.5
            else:
                out[k] = resample_like(v, img, mode="nearest").data.round()
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
        mask_threshold: voxels of a mask file ``> mask_threshold`` are in the mask (default 0.5;
            part of the disk-cache key). Non-binary masks are logged once per dataset.

    Raises:
        NeuroXAIError: from ``__getitem__`` (and from ``__init__`` with ``cache="memory"``), the
            named error of the subject's file (e.g. ``VolumeValueError`` for NaN voxels,
            ``AffineMismatchError`` for a mask off the image grid, ``VolumeFileError`` for a
            corrupt file), with MONAI's ``RuntimeError`` wrapper as its ``__cause__``.
    """

    def __init__(self, manifest: pd.DataFrame, keys: Sequence[str] = ("image",), *,
                 spacing: float | Sequence[float] | None = None, shape: Sequence[int] | None = None,
                 normalize: str | None = "zscore", cache: str = "none", cache_dir: str | Path | None = None,
                 num_workers: int = 0, mask_threshold: float = 0.5):
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
        self.transform = LoadSubject(keys, spacing, shape, normalize, mask_threshold)
        self._keys = keys
        rows = [{k: r[k] for k in ("subject_id",) + keys} for r in manifest.to_dict("records")]
        self._rows = rows
        if cache == "memory":
            try:  # loads every subject now
                self._ds = CacheDataset(rows, self.transform, num_workers=num_workers, progress=False)
            except NeuroXAIError:
                raise
            except Exception as exc:
                raise self._named(exc, None) from exc
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
        """The model grid when ``shape`` is not given: every subject must resample to one shape.

        Computed from the headers only, in RAS+ axis order (the order :func:`load_volume` gives),
        over all subjects; with several shapes, the largest extent along each axis.
        """
        import nibabel as nib

        shapes = set()
        for p in manifest["image"]:
            img = read_header(p)
            aff = np.asarray(img.affine, float)
            perm = nib.orientations.io_orientation(aff)[:, 0].astype(int)
            shape, zooms = np.empty(3), np.empty(3)
            shape[perm] = np.asarray(img.shape[:3], float)
            zooms[perm] = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
            sp = np.broadcast_to(np.asarray(spacing if spacing else zooms, float), (3,))
            shapes.add(tuple(int(s) for s in np.maximum(1, np.round(shape * zooms / sp - 1e-6))))
        if len(shapes) > 1:
            shape = tuple(int(s) for s in np.max(np.array(sorted(shapes)), axis=0))
            log.warning("images resample to different shapes %s; using %s (centre crop/pad). Set "
                        "data.shape in the protocol to choose.", sorted(shapes), shape)
            return shape
        return None

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> dict:
        try:
            return self._ds[i]
        except NeuroXAIError:
            raise
        except Exception as exc:
            row = self._rows[i] if isinstance(i, (int, np.integer)) and -len(self._rows) <= i < len(self._rows) \
                else None
            raise self._named(exc, row) from exc

    def _named(self, exc: BaseException, row: dict | None) -> NeuroXAIError:
        """The NeuroXAIError behind MONAI's ``RuntimeError`` wrapper (a copy, so that the raised
        error's ``__cause__`` is the wrapper without making a cycle), or a new one naming the row."""
        named = named_error(exc)
        if named is None:
            return _subject_error(row, self._keys, exc)
        try:
            return copy.copy(named)
        except Exception:  # pragma: no cover - an error class with an unusual constructor
            return named


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
