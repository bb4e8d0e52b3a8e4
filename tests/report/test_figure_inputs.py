"""``FigureInputs``: the one type the runner and the audit hand the report, and the one writer and
reader of ``figures.npz`` (its own format, and the ``|``-keyed layout of older runs)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from neuroxai.errors import RunError
from neuroxai.report import build_report
from neuroxai.report.figure_inputs import FigureInputs, SubjectFigures, TaskFigures

_spec = importlib.util.spec_from_file_location("neuroxai_test_report_fixtures_fi",
                                               Path(__file__).with_name("_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


def _assert_same(a: FigureInputs, b: FigureInputs) -> None:
    """Every part equal: the same tasks, methods and subjects in the same order, arrays equal in
    value, dtype and shape, ``None`` where the other has ``None``."""
    def arr(x, y):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)

    assert list(a.tasks) == list(b.tasks)
    for tid in a.tasks:
        s, t = a.tasks[tid], b.tasks[tid]
        arr(s.image, t.image)
        arr(s.mask, t.mask)
        assert s.spacing == t.spacing and s.background == t.background
        assert list(s.maps) == list(t.maps)
        for k in s.maps:
            arr(s.maps[k], t.maps[k])
        assert (s.example is None) == (t.example is None)
        if s.example is not None:
            assert s.example.subject_id == t.example.subject_id and list(s.example.maps) == list(t.example.maps)
            arr(s.example.image, t.example.image)
            arr(s.example.mask, t.example.mask)
            for k in s.example.maps:
                arr(s.example.maps[k], t.example.maps[k])


def _typed() -> FigureInputs:
    figs = FigureInputs.from_dict(fx.make_figures())
    rng = np.random.default_rng(3)
    # ids a protocol may give: a '|' once split the old layout's keys apart
    figs.tasks["site|A"] = TaskFigures(
        image=rng.random((5, 6, 7), dtype=np.float32), mask=None, spacing=(1.0, 1.5, 2.0),
        maps={"lrp|eps": rng.random((5, 6, 7)), "grad": rng.random((5, 6, 7), dtype=np.float32)},
        example=SubjectFigures("sub-01|x", rng.random((5, 6, 7), dtype=np.float32), None, {}),
        background="ground-truth frequency")
    return figs


def test_save_then_load_gives_back_every_part(tmp_path):
    figs = _typed()
    loaded = FigureInputs.load(figs.save(tmp_path / "figures.npz"))
    _assert_same(loaded, figs)
    assert loaded.tasks["site|A"].maps["lrp|eps"].dtype == np.float64
    assert loaded.tasks["lesion"].example is None and loaded.tasks["lesion"].maps == {}
    _assert_same(FigureInputs.load(loaded.save(tmp_path / "again.npz")), figs)


def test_an_old_runs_figures_npz_loads_as_the_same_inputs(tmp_path):
    old = fx.make_figures()
    np.savez(tmp_path / "figures.npz", **fx.flatten_figures(old))  # the '|'-keyed layout of older runs
    loaded = FigureInputs.load(tmp_path / "figures.npz")
    _assert_same(loaded, FigureInputs.from_dict(old))
    assert loaded.tasks["hippocampus_volume"].example.subject_id == "sub-007"
    assert loaded.tasks["hippocampus_volume"].spacing == (4.0, 4.0, 4.0)


def test_figures_drawn_from_saved_inputs_are_the_figures_of_the_dict_form(tmp_path):
    """The report drawn from the nested dict (the form every run handed it before), from the
    typed inputs, from them saved and loaded, and from an old run's file: the same PNG bytes."""
    results, old = fx.make_results(), fx.make_figures()
    np.savez(tmp_path / "old.npz", **fx.flatten_figures(old))
    sources = {"dict": old, "typed": FigureInputs.from_dict(old),
               "saved": FigureInputs.load(FigureInputs.from_dict(old).save(tmp_path / "new.npz")),
               "old_file": FigureInputs.load(tmp_path / "old.npz")}
    pngs = {}
    for name, figs in sources.items():
        build_report(results, figs, tmp_path / name)
        pngs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name / "figures").glob("*.png"))}
    assert {"hippocampus_volume_mean_maps.png", "hippocampus_volume_example.png"} <= set(pngs["dict"])
    for name in sources:
        assert pngs[name] == pngs["dict"], name
    # and the inputs matter: a changed map draws a different figure
    changed = FigureInputs.from_dict(old)
    changed.tasks["hippocampus_volume"].maps["lrp"] = changed.tasks["hippocampus_volume"].maps["lrp"][::-1].copy()
    build_report(results, changed, tmp_path / "changed")
    assert (tmp_path / "changed" / "figures" / "hippocampus_volume_mean_maps.png").read_bytes() != \
        pngs["dict"]["hippocampus_volume_mean_maps.png"]


def test_an_unreadable_or_newer_file_is_a_named_error(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(RunError, match="not readable"):
        FigureInputs.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "new.npz", __index__=np.asarray('{"format": 99, "tasks": {}}'))
    with pytest.raises(RunError, match="format 99"):
        FigureInputs.load(tmp_path / "new.npz")
