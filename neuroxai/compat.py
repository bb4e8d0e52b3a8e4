"""Reading what older neuroxai versions wrote: a ``results.json`` of schema 1.x keeps working.

The one place that knows the old names, so no current module carries them. Schema 2.0 moved the
per-subject score table out of ``results.json`` (1.x embedded it as columns of equal length) and
renamed the comparison with the chance map from ``random`` to ``chance_map``.
"""
from __future__ import annotations

import copy
import logging

import pandas as pd

log = logging.getLogger(__name__)

#: results.json 1.x comparison keys → 2.0
COMPARISON_KEYS_1X = {"random": "chance_map"}
#: the schema version a converted 1.x results.json is read as
CONVERTED_TO = "2.0"


def results_from_1x(d: dict) -> tuple[dict, pd.DataFrame | None]:
    """A 1.x ``results.json`` (as a dict) as a 2.0 one, and its embedded score table as a
    DataFrame (None when it had none). ``d`` is not changed."""
    d = copy.deepcopy(d)
    log.info("reading a results.json of schema %s as %s", d.get("schema_version"), CONVERTED_TO)
    scores = d.pop("scores", None) or {}
    lens = {len(v) for v in scores.values()} if isinstance(scores, dict) else {None}
    frame = pd.DataFrame(scores) if scores and len(lens) == 1 else None
    if scores and frame is None:
        d["scores"] = scores  # left for the schema to refuse, naming the key
    for m in d.get("methods") or []:
        for rec in (m.get("metrics") or {}).values():
            comps = rec.get("comparisons") if isinstance(rec, dict) else None
            if isinstance(comps, dict):
                rec["comparisons"] = {COMPARISON_KEYS_1X.get(k, k): v for k, v in comps.items()}
    for f in d.get("findings") or []:
        for e in f.get("evidence") or []:
            for reading in (e.get("study"), e.get("ours")):
                extra = reading.get("extra") if isinstance(reading, dict) else None
                if isinstance(extra, dict):
                    reading["extra"] = {COMPARISON_KEYS_1X.get(k, k): v for k, v in extra.items()}
    d["schema_version"] = CONVERTED_TO
    return d, frame
