"""The embedded cohort's signal-support mask covers where the latent variable changed the image."""
import pytest
import torch

from neuroxai.data.cohort import CohortParams, _Generator, region_ids


@pytest.fixture(scope="module")
def pairs():
    """Subjects generated twice with the same seed: with the regional effect and with none."""
    g1 = _Generator(CohortParams(n=4, spacing=4.0, seed=0))
    g0 = _Generator(CohortParams(n=4, spacing=4.0, seed=0, effect=0.0))
    return [(g1.subject(i), g0.subject(i)) for i in range(3)]


def test_signal_support_covers_where_the_image_differs_from_a_zero_effect_twin(pairs):
    hip = torch.tensor(region_ids(["Hippocampus_L", "Hippocampus_R"]))
    for a, b in pairs:
        brain = a["brain"] | b["brain"]
        diff = (a["t1"] - b["t1"]).abs() * brain
        sig = a["signal"]
        assert sig.any() and not (sig & ~a["brain"]).any()
        # Nothing else differs: lesions, bias and noise do not depend on the latent.
        assert float(diff[~sig].max()) < 0.25 * float(a["t1"][a["brain"]].mean())
        # Measured (4 mm, subjects 0-2): 83-85 % of the change's mass and 96-100 % of the voxels
        # changed by > 5 % of the mean brain intensity lie inside the support (tolerance 0.5 mm).
        assert float(diff[sig].sum() / diff.sum()) > 0.78
        big = diff > 0.05 * float(a["t1"][a["brain"]].mean())
        if big.sum() >= 10:
            assert float((big & sig).sum() / big.sum()) > 0.9
        # The support is the region's boundary zone on both sides: it holds most of the region
        # and reaches beyond it.
        reg = torch.isin(a["seg"].long(), hip)
        assert float((reg & sig).sum() / reg.sum()) > 0.75
        assert int((sig & ~reg).sum()) > int(reg.sum())


def test_a_cohort_without_the_regional_effect_has_no_signal_support(pairs):
    for _, b in pairs:
        assert not b["signal"].any()
