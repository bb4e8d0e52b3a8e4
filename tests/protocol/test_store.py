"""The subjects on the model grid: one file per subject and array, read one batch at a time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroxai.protocol.store import SubjectStore, write_store

KEYS = ["image", "segmentation", "brain_mask"]


def _item(i):
    rng = np.random.default_rng(i)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = i
    return {"subject_id": f"sub-{i:02d}", "affine": aff, "image": rng.random((1, 5, 6, 7), np.float32),
            "segmentation": torch.from_numpy(rng.integers(0, 300, (1, 5, 6, 7))),
            "brain_mask": torch.from_numpy(rng.random((1, 5, 6, 7)) > 0.5)}


def test_batches_equal_what_was_written(tmp_path):
    store = write_store(tmp_path, _item, 10, KEYS)
    b = store.batch(["sub-07", "sub-02"], torch.device("cpu"))
    for j, i in enumerate((7, 2)):
        it = _item(i)
        np.testing.assert_array_equal(b["image"][j].numpy(), it["image"])
        np.testing.assert_array_equal(b["segmentation"][j].numpy(), it["segmentation"].numpy())
        assert torch.equal(b["brain_mask"][j], it["brain_mask"])
        np.testing.assert_array_equal(b["affine"][j].numpy(), it["affine"])
    assert b["image"].dtype == torch.float32 and b["brain_mask"].dtype == torch.bool
    assert store.shape == (1, 5, 6, 7) and store.spacing == (2.0, 2.0, 2.0) and len(store) == 10
    assert SubjectStore(tmp_path).ids == [f"sub-{i:02d}" for i in range(10)]  # reopened from disk


def test_a_batch_reads_only_its_own_subjects(tmp_path, monkeypatch):
    store = write_store(tmp_path, _item, 10, KEYS)
    read = []
    real = np.load
    monkeypatch.setattr(np, "load", lambda p, *a, **k: (read.append(str(p)), real(p, *a, **k))[1])
    store.batch(["sub-03"], torch.device("cpu"), keys=["image"])
    assert read == [str(store.path("image", 3))]


class Killed(Exception):
    pass


def test_an_interrupted_write_resumes_at_the_missing_subjects(tmp_path):
    calls, killed = [], []

    def flaky(i):
        calls.append(i)
        if i == 6 and not killed:
            killed.append(i)
            raise Killed
        return _item(i)

    with pytest.raises(Killed):
        write_store(tmp_path, flaky, 10, KEYS)
    assert not (tmp_path / "index.json").exists()
    calls.clear()
    store = write_store(tmp_path, flaky, 10, KEYS)
    assert calls == [6, 7, 8, 9]  # subjects 0-5 were complete
    np.testing.assert_array_equal(store.read("image", "sub-06"), _item(6)["image"])
