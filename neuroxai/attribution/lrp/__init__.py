"""Layer-wise relevance propagation (LRP) for 3-D CNNs, registered as ``METHODS["lrp"]``.

Rules (``rules.py``), composites (``composites.py``), canonizers (``canonizers.py``) and the
attribution pass (``engine.py``) mirror Zennit's design and reproduce its maps; the pass is one
forward and one backward through a canonized copy of the model.
"""
from ..base import METHODS
from .canonizers import MergeBatchNorm, MonaiResNetCanonizer, Sum, canonize
from .composites import COMPOSITES, LayerMapComposite, RuleMapComposite, check_params, make_composite
from .engine import Conservation, bind_rules, lrp, lrp_conservation
from .rules import RULES, Rule, make_rule

if "lrp" not in METHODS:
    METHODS.register("lrp", check=check_params)(lrp)

__all__ = ["COMPOSITES", "Conservation", "LayerMapComposite", "MergeBatchNorm", "MonaiResNetCanonizer",
           "RULES", "Rule", "RuleMapComposite", "Sum", "bind_rules", "canonize", "lrp", "lrp_conservation",
           "make_composite", "make_rule"]
