from pathlib import Path

import pytest

from neuroxai.errors import ConfigError
from neuroxai.protocol.schema import PROTOCOL_DIR, load_protocol

SHIPPED = sorted(PROTOCOL_DIR.glob("*.yaml"))


def test_three_protocols_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"quick", "siegel2025", "preclinical-audit"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_protocols_validate(path):
    proto = load_protocol(path)
    assert proto.id == path.stem
    assert len(proto.content_hash()) == 64


def test_load_by_name_and_hash_is_stable():
    a, b = load_protocol("quick"), load_protocol(PROTOCOL_DIR / "quick.yaml")
    assert a.content_hash() == b.content_hash()


def test_hash_changes_with_content(tmp_path):
    text = (PROTOCOL_DIR / "quick.yaml").read_text()
    p = tmp_path / "q.yaml"
    p.write_text(text.replace("threshold: 0.1}", "threshold: 0.15}"))
    assert load_protocol(p).content_hash() != load_protocol("quick").content_hash()


def _broken(tmp_path, old, new):
    text = (PROTOCOL_DIR / "quick.yaml").read_text()
    assert old in text
    p = tmp_path / "broken.yaml"
    p.write_text(text.replace(old, new))
    return p, text.replace(old, new).splitlines()


def test_unknown_key_names_key_line_and_allowed(tmp_path):
    p, lines = _broken(tmp_path, "  normalize: zscore", "  normalise: zscore")
    with pytest.raises(ConfigError) as e:
        load_protocol(p)
    msg = str(e.value)
    line = next(i for i, l in enumerate(lines, 1) if "normalise" in l)
    assert str(p) in msg and "data.normalise" in msg and f"line {line}" in msg
    assert "allowed keys" in msg and "normalize" in msg


def test_bad_literal_lists_allowed_values(tmp_path):
    p, lines = _broken(tmp_path, "polarity: absolute", "polarity: both")
    with pytest.raises(ConfigError) as e:
        load_protocol(p)
    msg = str(e.value)
    assert "scoring.polarity" in msg and "'positive'" in msg and "'absolute'" in msg and "both" in msg


def test_unknown_method_name_is_rejected(tmp_path):
    p, _ = _broken(tmp_path, "  - name: gradcam\n", "  - name: gradkam\n")
    with pytest.raises(ConfigError) as e:
        load_protocol(p)
    assert "gradkam" in str(e.value) and "smoothgrad" in str(e.value)


def test_acceptance_metric_must_be_scored(tmp_path):
    p, _ = _broken(tmp_path, "{kind: scaled_ci_above, metric: relevance_rank_accuracy",
                   "{kind: scaled_ci_above, metric: pointing_game")
    with pytest.raises(ConfigError, match="pointing_game"):
        load_protocol(p)


def test_missing_protocol_lists_shipped():
    with pytest.raises(ConfigError, match="quick"):
        load_protocol("no-such-protocol")


def test_misspelt_method_param_is_rejected_at_load_with_allowed_params(tmp_path):
    p, _ = _broken(tmp_path, "{n_samples: 16, sigma: 0.1, seed: 0}", "{n_sample: 16, sigma: 0.1, seed: 0}")
    with pytest.raises(ConfigError) as e:
        load_protocol(p)
    msg = str(e.value)
    assert "n_sample" in msg and "'n_samples'" in msg and "smoothgrad" in msg


def test_misspelt_metric_param_is_rejected_at_load_not_mid_run(tmp_path):
    p, _ = _broken(tmp_path, "  - name: auroc\n", "  - name: auroc\n  - name: top_k_intersection\n    params: {top_k: 0.1}\n")
    with pytest.raises(ConfigError) as e:
        load_protocol(p)
    msg = str(e.value)
    assert "metrics.3.params" in msg and "top_k" in msg and "['k']" in msg
    ok, _ = _broken(tmp_path, "  - name: auroc\n", "  - name: auroc\n  - name: top_k_intersection\n    params: {k: 0.1}\n")
    assert load_protocol(ok).metrics[3].params == {"k": 0.1}


@pytest.mark.parametrize("params,words", [
    ("{rules: {Conv3d: {rule: gamma, gama: 0.5}, Linear: epsilon}}",   # a rule's parameter misspelt
     ["methods.1.params", "rules.Conv3d", "gama", "'gamma'", "'stabilizer'"]),
    ("{rules: {Conv3d: {rule: zplus, gamma: 0.5}, Linear: epsilon}}",  # a parameter the rule does not have
     ["rules.Conv3d", "'zplus'", "gamma", "['stabilizer']"]),
    ("{rules: {Conv3d: zplsu, Linear: epsilon}}", ["rules.Conv3d", "zplsu", "'zplus'"]),
    ("{rules: {Conv3d: {rule: gamma, gamma: -1}}}", ["gamma", "-1", ">= 0"]),
    ("{composite: epsilon_plus_flt}", ["epsilon_plus_flt", "epsilon_plus_flat"]),
])
def test_an_lrp_rule_or_rule_parameter_the_rules_do_not_know_is_refused_at_load(tmp_path, params, words):
    p, _ = _broken(tmp_path, "params: {composite: epsilon_plus_flat}", f"params: {params}")
    with pytest.raises(ConfigError) as e:
        load_protocol(p)
    msg = str(e.value)
    assert str(p) in msg and all(w in msg for w in words), msg


def test_an_lrp_rule_with_its_own_parameters_loads(tmp_path):
    p, _ = _broken(tmp_path, "params: {composite: epsilon_plus_flat}",
                   "params: {rules: {first: flat, Conv3d: {rule: gamma, gamma: 0.5}, Linear: epsilon}}")
    lrp = load_protocol(p).methods[1]
    assert lrp.name == "lrp" and lrp.params["rules"]["Conv3d"] == {"rule": "gamma", "gamma": 0.5}


class _CohortReached(Exception):
    pass


@pytest.mark.parametrize("old,new,key", [
    ("split: [0.5, 0.1, 0.4]}", "split: [0.5, 0.1, 0.4], margn_mm: 2}", "margn_mm"),   # a task parameter
    ("params: {channels: [4, 8]}", "params: {chanels: [4, 8]}", "chanels"),            # a model parameter
    ("  - name: gradient\n",                                                              # an LRP rule parameter
     "  - name: lrp\n    params: {rules: {Conv3d: {rule: gamma, gama: 0.5}, Linear: epsilon}}\n", "gama"),
])
def test_a_misspelt_task_or_model_parameter_is_refused_before_the_cohort_is_generated(tmp_path, monkeypatch,
                                                                                     old, new, key):
    import neuroxai.data.cohort as cohort
    from neuroxai.protocol.runner import run_protocol

    def reached(*a, **k):
        raise _CohortReached

    monkeypatch.setattr(cohort, "generate_cohort", reached)
    from tests.test_hostile_input import SMALL

    assert old in SMALL
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(SMALL)
    bad.write_text(SMALL.replace(old, new, 1))
    with pytest.raises(_CohortReached):  # spelt right, the run gets as far as generating the cohort
        run_protocol(good, tmp_path / "run_good")
    with pytest.raises(ConfigError) as e:  # misspelt: refused at load, the cohort never started
        run_protocol(bad, tmp_path / "run_bad")
    assert key in str(e.value) and str(bad) in str(e.value)
    assert not (tmp_path / "run_bad").exists()
