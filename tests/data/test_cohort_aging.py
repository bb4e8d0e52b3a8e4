"""The embedded cohort's known aging effects and its second latent region group."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from neuroxai.data.cohort import DERIVED_LABELS, cohort_labels, generate_cohort
from neuroxai.data.manifest import load_manifest
from neuroxai.errors import ConfigError
from neuroxai.tasks import build_task
from neuroxai.tasks.cidp import label_volumes

AGING = {"Lateral_Ventricle_L": 0.25, "Lateral_Ventricle_R": 0.25, "Hippocampus_L": -0.12,
         "Hippocampus_R": -0.12, "Thalamus_L": -0.06, "Thalamus_R": -0.06}
N = 10


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("aging")
    m = generate_cohort(d, n=N, spacing=4.0, seed=2, regions=["Cuneus_L", "Cuneus_R"],
                        second_regions=["Putamen_L", "Putamen_R"], age_effects=AGING, deform_mm=0.0,
                        head_scale_sd=0.0, lesion_fraction=0.0)
    return d, load_manifest(m)


def test_aging_regions_change_with_age_in_the_stated_order(cohort):
    d, man = cohort
    labs, vols = label_volumes(man["segmentation"].tolist())
    col = {int(v): j for j, v in enumerate(labs)}
    age = man["age"].to_numpy(float)
    X = np.column_stack([np.ones(N), (age - 50) / 10, man["sex"].to_numpy(float)])
    slope = {}
    for name, rate in AGING.items():
        v = vols[:, col[cohort_labels(AGING)[name]]]
        slope[name] = math.expm1(np.linalg.lstsq(X, np.log(v), rcond=None)[0][1])
        # realised per-decade change: the stated sign, and most of its size (the radial field
        # tapers at the region's edge)
        assert 0.5 * abs(rate) < abs(slope[name]) < 1.2 * abs(rate) and np.sign(slope[name]) == np.sign(rate)
    order = sorted(slope, key=lambda n: -abs(slope[n]))
    assert [n.rsplit("_", 1)[0] for n in order[::2]] == ["Lateral_Ventricle", "Hippocampus", "Thalamus"]


def test_derived_labels_are_written_and_read_back(cohort):
    d, man = cohort
    dseg = pd.read_csv(d / "derivatives/neuroxai/dseg.tsv", sep="\t")
    names = dict(zip(dseg["name"], dseg["index"]))
    for n, v in DERIVED_LABELS.items():
        assert names[n] == v
    assert not any(n.startswith("Thal_") for n in names)  # merged into Thalamus_L/R
    params = json.loads((d / "cohort.json").read_text())["params"]
    assert params["age_effects"] == AGING and params["second_regions"] == ["Putamen_L", "Putamen_R"]
    # the brain-age task reads the true ordering from the cohort
    t = build_task("brain_age", man, seed=0)
    assert t.info["true_ordering"] == ["Lateral_Ventricle_L", "Lateral_Ventricle_R", "Hippocampus_L",
                                       "Hippocampus_R", "Thalamus_L", "Thalamus_R"]
    assert t.metric_params["rank_biased_overlap"]["reference"] == [171, 172, 41, 42, 81, 82]


def test_second_group_follows_its_own_latent(cohort):
    d, man = cohort
    lat = pd.read_csv(d / "derivatives/neuroxai/latent.tsv", sep="\t")
    labs, vols = label_volumes(man["segmentation"].tolist())
    put = vols[:, list(labs).index(77)] + vols[:, list(labs).index(78)]
    cun = vols[:, list(labs).index(49)] + vols[:, list(labs).index(50)]
    assert np.corrcoef(np.log(put), lat["latent_b"])[0, 1] > 0.9
    assert np.corrcoef(np.log(cun), lat["latent"])[0, 1] > 0.8
    # the first latent's draws are those of a cohort without a second group
    for i, z in enumerate(lat["latent"]):
        rng = np.random.default_rng(np.random.SeedSequence([2, i]))
        age, _ = rng.uniform(20, 80), rng.integers(0, 2)
        assert z == pytest.approx(-0.3 * (age - 50) / 17.3 + math.sqrt(1 - 0.09) * rng.standard_normal())


def test_bad_aging_options_are_named(tmp_path):
    with pytest.raises(ConfigError, match="age effect"):
        generate_cohort(tmp_path / "a", n=2, spacing=8.0, age_effects={"Hippocampus_L": -0.9})
    with pytest.raises(ConfigError, match="Hipocampus"):
        generate_cohort(tmp_path / "b", n=2, spacing=8.0, age_effects={"Hipocampus_L": -0.1})
