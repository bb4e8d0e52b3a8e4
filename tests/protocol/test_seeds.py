"""Several model seeds (``model.training.seeds``): the two-level bootstrap, the protocol check, and a
run whose per-seed verdicts equal single-seed runs and whose pooled numbers follow from them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from neuroxai.errors import ConfigError
from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol
from neuroxai.protocol.seeds import pooled_metrics
from neuroxai.scoring.stats import bootstrap_ci, bootstrap_ci_seeds, paired_test


# ---------------------------------------------------------------- the bootstrap over seeds and subjects

def test_one_seed_is_the_subject_bootstrap():
    v = torch.tensor(np.random.default_rng(3).normal(size=37))
    assert bootstrap_ci_seeds(v[None], n_boot=500, seed=4) == pytest.approx(
        bootstrap_ci(v, n_boot=500, method="percentile", seed=4), abs=1e-12)


def test_identical_seeds_add_no_width():
    v = torch.tensor(np.random.default_rng(5).normal(size=25))
    assert bootstrap_ci_seeds(v.repeat(3, 1), n_boot=400, seed=1) == pytest.approx(
        bootstrap_ci(v, n_boot=400, method="percentile", seed=1), abs=1e-12)


def test_seed_spread_widens_the_interval():
    # every subject scores the seed's number: subjects alone say [1, 1]; three seeds 0, 1, 2
    # resampled give means k/3, with P(all three draws are seed 0) = 1/27 > 2.5 %: the interval is [0, 2]
    m = torch.arange(3, dtype=torch.float64)[:, None].repeat(1, 40)
    est, lo, hi = bootstrap_ci_seeds(m, n_boot=4000, seed=0)
    assert est == 1.0 and lo == 0.0 and hi == 2.0
    assert bootstrap_ci(m.mean(0), n_boot=4000, seed=0) == (1.0, 1.0, 1.0)


def test_pooled_model_is_at_chance_when_one_seed_is():
    pm = pooled_metrics([{"auroc": 0.8, "auroc_ci_low": 0.7, "auroc_ci_high": 0.9, "at_chance": False, "n_test": 10},
                         {"auroc": 0.6, "auroc_ci_low": 0.45, "auroc_ci_high": 0.75, "at_chance": True, "n_test": 10}])
    assert pm == {"auroc": pytest.approx(0.7), "auroc_ci_low": 0.45, "auroc_ci_high": 0.9, "at_chance": True,
                  "n_test": 10}


# ---------------------------------------------------------------- the protocol check

@pytest.mark.parametrize("training, says", [
    ({"seeds": [0, 0]}, "repeats a seed"),
    ({"seeds": [0, 1], "seed": 0}, "both seed and seeds"),
    ({"seeds": []}, "non-empty list"),
    ({"seeds": "0,1"}, "non-empty list"),
    ({"seeds": [0, -1]}, "not a usable seed"),
])
def test_bad_seeds_are_refused_at_load(tiny_protocol, tmp_path, training, says):
    spec = yaml.safe_load(tiny_protocol.read_text())
    spec["model"]["training"] = {"epochs": 1, **training}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=says):
        load_protocol(p)


def test_seeds_with_a_checkpoint_are_refused(tiny_protocol, tmp_path):
    spec = yaml.safe_load(tiny_protocol.read_text())
    spec["model"].update(training={"seeds": [0, 1]}, checkpoint="model.pt")
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="checkpoint gives one"):
        load_protocol(p)


# ---------------------------------------------------------------- a run over two seeds

def _with_training(tiny_protocol, tmp_path, name, **training):
    spec = yaml.safe_load(tiny_protocol.read_text())
    tr = {k: v for k, v in spec["model"]["training"].items() if k != "seed"}
    spec["model"]["training"] = {**tr, **training}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_two_seeds_pool_what_each_seed_gives(tiny_protocol, tmp_path):
    out = tmp_path / "run"  # the single-seed runs first, in the same folder: the seeds run reuses their stages
    single = {s: run_protocol(load_protocol(_with_training(tiny_protocol, tmp_path, f"s{s}", seed=s)), out,
                              report=False).results for s in (0, 1)}
    res = run_protocol(load_protocol(_with_training(tiny_protocol, tmp_path, "both", seeds=[0, 1])), out)
    r = res.results
    assert r.seeds == [0, 1]
    sc = r.score_table().frame()
    assert set(sc["seed"]) == {0, 1}
    for m in r.methods:
        one = {s: single[s].method(m.task, m.method) for s in (0, 1)}
        assert m.seed_verdicts == {str(s): one[s].verdict for s in (0, 1)}
        for met, rec in m.metrics.items():
            # the pooled mean is the mean over both seeds' subjects
            assert rec.mean == pytest.approx(np.mean([one[s].metrics[met].mean for s in (0, 1)]), abs=1e-12)
            assert rec.ci_method == "percentile over seeds × subjects"
            assert rec.ci_low <= rec.mean <= rec.ci_high
    # the pooled test vs the random map runs on each subject's seed mean
    st = load_protocol(tiny_protocol).statistics
    g = r.method("hippo", "gradient").metrics["relevance_mass_accuracy"]
    import pandas as pd

    df = pd.DataFrame(sc)
    df = df[(df.task == "hippo") & (df.metric == "relevance_mass_accuracy")]
    avg = df.groupby(["method", "subject_id"])["value"].mean()
    p = paired_test(torch.tensor(avg["gradient"].to_numpy()), torch.tensor(avg["random"].loc[avg["gradient"].index]
                                                                           .to_numpy()),
                    method=st.test, alternative="greater", n_perm=st.n_permutations, seed=st.seed)
    assert g.comparisons["chance_map"].p == pytest.approx(float(p), rel=1e-12)
    assert g.comparisons["chance_map"].n_pairs == avg["gradient"].size
    t = r.task("hippo")
    assert set(t.models_by_seed) == {"0", "1"}
    assert t.models_by_seed["1"].auroc == pytest.approx(single[1].task("hippo").model.auroc)
    assert t.model.auroc == pytest.approx(np.mean([single[s].task("hippo").model.auroc for s in (0, 1)]))
    html = (res.report_dir / "index.html").read_text()
    assert 'id="seeds"' in html and "seed 1" in html
