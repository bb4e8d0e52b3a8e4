"""The arrays the report's map figures are drawn from, and their file, ``figures.npz``.

A validation run (``protocol/figures_input.py``) and an audit (``protocol/saved_maps.py``) both
hand the report a :class:`FigureInputs`; :func:`~neuroxai.report.build.build_report` draws it and
``FigureInputs.save`` / ``FigureInputs.load`` are the only writer and reader of its file, so
``neuroxai report RUN_DIR`` redraws exactly what the run drew. Arrays are NumPy ``(D, H, W)``
float in RAS voxel order (``report/figures.py``), spacing in mm.

The file (format 2): one ``__index__`` entry, a JSON text naming every task, method and subject
and the array that holds each volume (``a0``, ``a1``, …), so any id (one holding ``|``) round-trips.
Runs before format 2 wrote ``"{task}|image"``, ``"{task}|maps|{method}"``,
``"{task}|example|maps|{method}"``… keys; :meth:`FigureInputs.load` still reads them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from ..atomic import atomic_write
from ..errors import RunError

FORMAT = 2
_INDEX = "__index__"


@dataclass
class SubjectFigures:
    """One subject shown as the example: its image, its ground truth and each method's map."""

    subject_id: str
    image: np.ndarray
    mask: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class TaskFigures:
    """A task's figure inputs. ``image``: the cohort-mean image (an audit without anatomical
    images: the ground-truth frequency, said by ``background``); ``mask``: the fraction of
    subjects with ground truth at each voxel; ``maps``: each method's cohort-mean map (every map
    first scaled to unit positive mass); ``example``: one subject. A part left ``None`` (or no
    maps) skips its figure."""

    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    spacing: tuple[float, float, float] | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    example: SubjectFigures | None = None
    background: str | None = None


@dataclass
class FigureInputs:
    """``tasks``: ``{task_id: TaskFigures}`` in the order the report shows them."""

    tasks: dict[str, TaskFigures] = field(default_factory=dict)

    # ------------------------------------------------------------------------------- the file
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``figures.npz``, compressed, atomically); return it."""
        arrays: dict[str, np.ndarray] = {}

        def put(a) -> str | None:
            if a is None:
                return None
            name = f"a{len(arrays)}"
            arrays[name] = np.asarray(a)
            return name

        index: dict = {"format": FORMAT, "tasks": {}}
        for tid, t in self.tasks.items():
            entry = {"image": put(t.image), "mask": put(t.mask),
                     "spacing": None if t.spacing is None else [float(s) for s in t.spacing],
                     "maps": {k: put(v) for k, v in t.maps.items()}, "background": t.background, "example": None}
            if t.example is not None:
                ex = t.example
                entry["example"] = {"subject_id": str(ex.subject_id), "image": put(ex.image), "mask": put(ex.mask),
                                    "maps": {k: put(v) for k, v in ex.maps.items()}}
            index["tasks"][tid] = entry
        arrays[_INDEX] = np.asarray(json.dumps(index))
        return atomic_write(path, write=lambda tmp: np.savez_compressed(tmp, **arrays))

    @classmethod
    def load(cls, path: str | Path) -> "FigureInputs":
        """Read a ``figures.npz`` written by :meth:`save`, or by a run before it (``|`` keys)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise RunError("figures.npz is not readable", path=path, expected="the figure inputs a run wrote",
                           found=f"{type(exc).__name__}: {exc}",
                           fix="rerun the protocol with --resume to write it again (or delete it: the report "
                               "is then built without the map figures)") from None
        if _INDEX not in arrays:
            return cls._load_flat(arrays)
        index = json.loads(str(arrays[_INDEX]))
        if index.get("format") != FORMAT:
            raise RunError("figures.npz has a format this version does not read", path=path,
                           expected=f"format {FORMAT}", found=f"format {index.get('format')!r}",
                           fix="rebuild the report with the neuroxai version that wrote the run")

        def get(name):
            return None if name is None else arrays[name]

        tasks = {}
        for tid, e in index["tasks"].items():
            ex = e.get("example")
            example = None if ex is None else SubjectFigures(
                subject_id=ex["subject_id"], image=get(ex["image"]), mask=get(ex["mask"]),
                maps={k: get(v) for k, v in ex["maps"].items()})
            tasks[tid] = TaskFigures(image=get(e["image"]), mask=get(e["mask"]),
                                     spacing=None if e["spacing"] is None else tuple(e["spacing"]),
                                     maps={k: get(v) for k, v in e["maps"].items()}, example=example,
                                     background=e.get("background"))
        return cls(tasks)

    @classmethod
    def _load_flat(cls, arrays: Mapping[str, np.ndarray]) -> "FigureInputs":
        """The layout before format 2: ``"{task}|image"``, ``"{task}|mask"``, ``"{task}|spacing"``,
        ``"{task}|maps|{method}"``, ``"{task}|example|{image,mask,subject_id}"``,
        ``"{task}|example|maps|{method}"``."""
        raw: dict = {}
        for key, v in arrays.items():
            parts = key.split("|")
            t = raw.setdefault(parts[0], {"maps": {}, "example": {"maps": {}}})
            if len(parts) == 2:
                t[parts[1]] = tuple(float(s) for s in v) if parts[1] == "spacing" else v
            elif parts[1] == "maps":
                t["maps"][parts[2]] = v
            elif parts[1] == "example" and parts[2] == "maps":
                t["example"]["maps"][parts[3]] = v
            elif parts[1] == "example":
                t["example"][parts[2]] = str(v) if parts[2] == "subject_id" else v
        return cls.from_dict({"tasks": raw})

    # --------------------------------------------------------------------- the nested-dict form
    @classmethod
    def from_dict(cls, figures: Mapping | None) -> "FigureInputs":
        """From ``{"tasks": {task_id: {"image", "mask", "spacing", "maps": {method: (D,H,W)},
        "example": {"subject_id", "image", "mask", "maps"}}}}``, any part missing."""
        tasks = {}
        for tid, t in ((figures or {}).get("tasks") or {}).items():
            t = t or {}
            ex = t.get("example") or {}
            example = None
            if ex.get("image") is not None:
                example = SubjectFigures(subject_id=str(ex.get("subject_id", "")), image=ex["image"],
                                         mask=ex.get("mask"), maps=dict(ex.get("maps") or {}))
            sp = t.get("spacing")
            tasks[tid] = TaskFigures(image=t.get("image"), mask=t.get("mask"),
                                     spacing=None if sp is None else tuple(float(s) for s in sp),
                                     maps=dict(t.get("maps") or {}), example=example,
                                     background=t.get("background"))
        return cls(tasks)


__all__ = ["FORMAT", "FigureInputs", "SubjectFigures", "TaskFigures"]
