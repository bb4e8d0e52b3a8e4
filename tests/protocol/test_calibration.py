"""Every shipped protocol's criteria are calibrated: the oracle map (the ground truth itself) passes
and the random map fails, scored with the protocol's own metrics and statistics."""
import numpy as np
import pandas as pd
import pytest
import torch

from neuroxai.protocol.schema import list_protocols
from neuroxai.protocol.verdict import assemble_results
from neuroxai.scoring import score
from neuroxai.tasks.base import TaskData

N, S = 24, 16


def _masks():
    g = torch.Generator().manual_seed(0)
    m = torch.zeros(N, 1, S, S, S, dtype=torch.bool)
    for i in range(N):
        c = torch.randint(3, S - 5, (3,), generator=g)
        m[i, 0, c[0]:c[0] + 3, c[1]:c[1] + 3, c[2]:c[2] + 2] = True
    return m


class _Model:
    metrics = {"auroc": 0.95, "auroc_ci_low": 0.9, "auroc_ci_high": 1.0, "at_chance": False}


def _results(proto):
    mask = _masks()
    metrics = {m.name: dict(m.params) for m in proto.metrics if m.name != "region_rank"}
    ids = [f"s{i:02d}" for i in range(N)]
    rows = []
    for mspec in proto.methods:
        if mspec.name not in ("oracle", "random"):
            continue
        attr = mask.float() if mspec.name == "oracle" else torch.rand(mask.shape, generator=torch.Generator().manual_seed(1))
        s = score(attr, mask, metrics, spacing=(2.0, 2.0, 2.0))
        for k, v in s.items():
            rows += [(sid, mspec.key, k, float(x)) for sid, x in zip(ids, v)]
    df = pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value"])
    task = TaskData("region_volume", ids, np.arange(N) % 2, np.array(["test"] * N), "classification", 2,
                    np.ones(N, bool), ("segmentation",), lambda b: None)
    return assemble_results(proto, {}, {}, {"t": task}, {"t": _Model()}, {"t": df}, {},
                            data_info={"source": "test", "n_subjects": N})


@pytest.mark.parametrize("proto", list_protocols(), ids=lambda p: p.id)
def test_oracle_passes_and_random_fails_every_shipped_protocol(proto):
    names = {m.name for m in proto.methods}
    assert {"oracle", "random"} <= names, "every shipped protocol carries both baselines"
    by = {m["name"]: m for m in _results(proto)["methods"]}
    oracle, rnd = by["oracle"], by["random"]
    applicable = [c for c in oracle["criteria"] if c["applicable"]]
    assert applicable and all(c["passed"] is True for c in applicable), oracle["criteria"]
    assert oracle["verdict"] == "PASS"
    assert rnd["verdict"] == "FAIL"
    assert any(c["passed"] is False and c["kind"] != "beats_random" for c in rnd["criteria"]), \
        "the random map must fail on its score, not only because it cannot beat itself"
