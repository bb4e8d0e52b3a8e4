"""One parameter check for every registry (methods, metrics, tasks, models): the configurable
parameters are read from the signature at registration, less the inputs a caller passes."""
from __future__ import annotations

import inspect

import pytest

from neuroxai.attribution import METHODS, attribute
from neuroxai.errors import AttributionError, ConfigError
from neuroxai.models import MODELS
from neuroxai.registry import Registry
from neuroxai.scoring import METRICS
from neuroxai.tasks import TASKS


def test_params_are_the_signatures_less_the_inputs():
    def keyword_only(fn):
        return tuple(n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY)

    for name in METHODS:
        fn = METHODS[name]
        allowed = METHODS.params(name)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
        assert allowed is None if takes_kwargs else allowed == keyword_only(fn), name
    assert METHODS.params("smoothgrad")[:2] == ("n_samples", "sigma")
    assert METRICS.params("top_k_intersection") == ("k",)  # spacing is passed by score(), not configured
    assert "true_region" in METRICS.params("region_rank") and "spacing" not in METRICS.params("region_rank")
    assert "seed" not in TASKS.params("lesion") and "target" in TASKS.params("lesion")
    assert TASKS.params("null_control") is None  # **params: passed on to its base task, checked there
    assert {"in_channels", "n_outputs"} <= set(MODELS.params("small_cnn"))


def test_one_check_names_the_allowed_parameters_in_each_layer():
    import torch

    with pytest.raises(AttributionError, match=r"unknown parameter\(s\) \['nsamples'\] for attribution method 'smoothgrad'"):
        attribute(None, torch.zeros(1, 1, 4, 4, 4), 0, "smoothgrad", nsamples=3)
    with pytest.raises(ConfigError, match="'k'") as e:
        METRICS.check("top_k_intersection", {"top_k": 0.1}, path="metrics.top_k_intersection.params")
    assert "metrics.top_k_intersection.params" in str(e.value)
    with pytest.raises(ConfigError, match=r"\['channel'\] for model 'small_cnn'"):
        MODELS["small_cnn"](in_channels=1, n_outputs=2, channel=[4])
    from neuroxai.tasks import build_task

    with pytest.raises(ConfigError, match=r"\['region'\] for task 'region_volume'"):
        build_task("region_volume", None, region=["Hippocampus"])  # the parameter is `regions`
    METHODS.check("gradient", {})  # nothing unknown: no error


def test_a_registry_reads_each_entry_once():
    r = Registry("thing", inputs=("x",))

    @r.register("a")
    def a(x, *, k: int = 1, m: float = 0.0): ...

    @r.register("b")
    def b(x, **anything): ...

    assert r.params("a") == ("k", "m") and r.params("b") is None
    r.check("b", {"whatever": 1})
    with pytest.raises(ConfigError, match=r"\['q'\] for thing 'a'.*") as e:
        r.check("a", {"q": 1, "k": 2})
    assert "['k', 'm']" in str(e.value)
    with pytest.raises(ConfigError, match="unknown thing 'c'"):
        r.params("c")


def test_registrations_carry_their_facts():
    """Method roles and needs, and task facts, are read from the registration, not from names."""
    from neuroxai.attribution import METHODS
    from neuroxai.attribution.baselines import BASELINES, is_baseline, needs, role
    from neuroxai.registry import Registry
    from neuroxai.tasks import TASKS

    r = Registry("thing")
    r.register("a", role="ceiling", needs=("mask",))(lambda: None)
    r.register("b")(lambda: None)
    assert r.facts("a") == {"role": "ceiling", "needs": ("mask",)} and r.facts("b") == {}
    r.facts("a")["role"] = "changed"  # a copy: the registration cannot be edited through it
    assert r.facts("a")["role"] == "ceiling"
    assert {n: role(n) for n in BASELINES} == {"random": "chance", "edge_detector": "floor", "oracle": "ceiling"}
    assert needs("oracle") == ("mask",) and needs("gradient") == ()
    assert not is_baseline("gradient") and not is_baseline("a_prior_studys_folder")
    assert all(role(n) == "under_test" for n in METHODS if n not in BASELINES)
    assert TASKS.facts("positive_control")["control"] == "positive"
    assert "inserted" in TASKS.facts("positive_control")["ground_truth"]({"regions": ["X"]})
