"""The score table beside results.json (schema 2.0): written chunk by chunk, read a task × method
at a time, the same rows as the frames it came from; a 1.x results.json with the table embedded
still reads."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuroxai.errors import RunError
from neuroxai.report import validate_results
from neuroxai.report.scores import ScoreTable, ScoreWriter, open_table

_spec = importlib.util.spec_from_file_location("neuroxai_test_score_table_fixtures",
                                               Path(__file__).with_name("_fixtures.py"))
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)


def _chunks(n_subjects=50, chunk=8, methods=("a", "b", "c"), seeds=(None,)):
    rng = np.random.default_rng(0)
    for seed in seeds:
        for task in ("t1", "t2"):
            for m in methods:
                for c0 in range(0, n_subjects, chunk):
                    sids = [f"sub-{i:03d}" for i in range(c0, min(n_subjects, c0 + chunk))]
                    rows = [(task, s, m, met, float(rng.random()), float(i % 2), float(rng.random()), 1.0)
                            for i, s in enumerate(sids) for met in ("x", "x_chance")]
                    df = pd.DataFrame(rows, columns=["task", "subject_id", "method", "metric", "value",
                                                     "label", "prediction", "target"])
                    yield df if seed is None else df.assign(seed=seed)


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Names as plain text (the file reads them as categoricals), numbers as float64."""
    return df.astype({c: object for c in ("task", "subject_id", "method", "metric") if c in df.columns}).astype(
        {c: np.float64 for c in df.columns if c not in ("task", "subject_id", "method", "metric")})


def test_written_in_chunks_read_per_method_equals_the_whole(tmp_path):
    whole = pd.concat(list(_chunks()), ignore_index=True)
    with ScoreWriter(tmp_path / "s.parquet", ("label", "prediction", "target"), row_group_rows=100) as w:
        for df in _chunks():
            w.write(df)
    assert w.ref.n_rows == len(whole) == 2 * 3 * 50 * 2
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(tmp_path / "s.parquet").metadata
    assert meta.num_row_groups >= 6  # at least one per task × method: a reader skips the others
    t = ScoreTable(tmp_path / "s.parquet")
    assert t.keys() == [(a, m) for a in ("t1", "t2") for m in ("a", "b", "c")]
    got = t.frame("t2", "b")
    want = whole[(whole.task == "t2") & (whole.method == "b")].reset_index(drop=True)
    pd.testing.assert_frame_equal(_plain(got[list(want.columns)]), _plain(want))
    assert len(t.frame("t1", ["a", "c"], "x")) == 2 * 50
    back = pd.concat(list(t.batches(rows=77)), ignore_index=True)
    pd.testing.assert_frame_equal(_plain(back[list(whole.columns)]), _plain(whole))
    # a table held in memory answers the same
    mem = ScoreTable.from_frame(whole)
    pd.testing.assert_frame_equal(_plain(mem.frame("t2", "b")[list(want.columns)]), _plain(want))
    assert mem.keys() == t.keys()


def test_a_killed_writer_leaves_no_table_under_the_final_name(tmp_path):
    with pytest.raises(RuntimeError):
        with ScoreWriter(tmp_path / "s.parquet", ("label",), row_group_rows=10) as w:
            for i, df in enumerate(_chunks()):
                w.write(df)
                if i == 3:
                    raise RuntimeError("killed")
    assert not (tmp_path / "s.parquet").exists() and not list(tmp_path.glob("*.partial"))


def test_seeds_are_read_one_at_a_time(tmp_path):
    with ScoreWriter(tmp_path / "s.parquet", ("label", "prediction", "target", "seed")) as w:
        for df in _chunks(seeds=(0, 1, 2)):
            w.write(df)
    t = ScoreTable(tmp_path / "s.parquet")
    whole = pd.concat(list(_chunks(seeds=(0, 1, 2))), ignore_index=True)
    one = t.for_seed(1).frame("t1", "a")
    assert "seed" not in one.columns and len(one) == 50 * 2
    np.testing.assert_array_equal(one["value"], whole[(whole.seed == 1) & (whole.task == "t1")
                                                      & (whole.method == "a")]["value"])


def test_a_table_of_another_run_is_refused_and_a_missing_one_named(tmp_path):
    ref = ScoreTable.from_frame(fx.scores_frame()).write(tmp_path / "scores.parquet")
    assert open_table(ref, tmp_path).n_rows == ref.n_rows
    with pytest.raises(RunError, match="not the one results.json was written with"):
        open_table(ref.model_copy(update={"sha256": "0" * 64}), tmp_path)
    with pytest.raises(RunError, match="not there"):
        open_table(ref, tmp_path / "elsewhere")
    assert open_table(ref, tmp_path / "elsewhere", missing_ok=True) is None


def test_a_1x_results_json_reads_as_2_0_with_its_embedded_table():
    old, new = validate_results(fx.results_dict_1x()), fx.make_results()
    assert old.schema_version == "2.0"
    assert old.model_dump() == new.model_dump()  # comparisons keyed "chance_map", no embedded table
    assert "chance_map" in old.methods[0].metrics["auroc"].comparisons
    a = old.score_table().frame("hippocampus_volume", "lrp")
    b = new.score_table().frame("hippocampus_volume", "lrp")
    pd.testing.assert_frame_equal(_plain(a), _plain(b))
    assert len(a) == fx.N * 2 * 3
