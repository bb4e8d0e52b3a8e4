"""Shipped configs load, build their models, and a bad name lists the available ones."""
from __future__ import annotations

import pytest
import torch

from neuroxai.errors import ConfigError
from neuroxai.models import MODELS, TrainConfig
from neuroxai.protocol.runner import CONFIG_DIR, _config_yaml


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "models").glob("*.yaml")))
def test_model_configs_build(name):
    params = _config_yaml("models", name)
    arch = "sfcn" if name.startswith("sfcn") else name
    model = MODELS[arch](in_channels=1, n_outputs=2, **params)
    n = sum(p.numel() for p in model.parameters())
    assert n > 1000
    if name == "sfcn":  # Peng et al. 2021: about 3M parameters
        assert 2.5e6 < n < 3.5e6, n


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "training").glob("*.yaml")))
def test_training_configs_validate(name):
    cfg = TrainConfig(**_config_yaml("training", name))
    assert cfg.epochs >= 1


def test_unknown_config_lists_choices():
    with pytest.raises(ConfigError, match="small_cnn"):
        _config_yaml("models", "no_such_model")
