"""The protocol reference, generated from the schema itself so it cannot drift.

:func:`protocol_reference` walks the pydantic models of :mod:`neuroxai.protocol.schema` and writes
every key with its type, default, allowed values (literals and bounds), description and one
example (taken from the first shipped protocol that sets the key, else the default). It is
committed as ``docs/protocol.md`` (``make protocol-docs``; a test fails when the two differ).
:func:`annotated_protocol` prints a shipped protocol's YAML with each key's type and meaning as a
comment (``neuroxai protocols --show NAME``).
"""
from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .schema import PROTOCOL_DIR, Protocol, resolve_protocol_path

_BOUNDS = ((annotated_types.Ge, "≥"), (annotated_types.Gt, ">"), (annotated_types.Le, "≤"), (annotated_types.Lt, "<"))


def _models_in(ann) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``Model``, ``list[Model]``, ``Optional[Model]``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in typing.get_args(ann) for m in _models_in(a)]


def type_name(ann) -> str:
    """A reader's name for a type annotation: ``int``, ``one of 'a', 'b'``, ``list of mapping``…"""
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        name = " or ".join(type_name(a) for a in rest)
        return f"{name} or null" if len(rest) < len(args) else name
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return "[" + ", ".join(type_name(a) for a in args) + "]"
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "section"
    if ann is Any:
        return "any"
    return getattr(ann, "__name__", str(ann))


def _bounds(field) -> str:
    out = [f"{sym} {getattr(m, type(m).__name__.lower())}" for m in field.metadata
           for cls, sym in _BOUNDS if isinstance(m, cls)]
    return ", ".join(out)


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    v = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(v, BaseModel):
        return "(section defaults)"
    return json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)


def iter_fields(model: type[BaseModel] = Protocol, prefix: str = "") -> Iterator[tuple[str, Any, type[BaseModel]]]:
    """``(key path, field, owning model)`` for every key, depth first; list items as ``key[].sub``."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, field, model
        subs = _models_in(field.annotation)
        if subs:
            listy = typing.get_origin(field.annotation) is list
            yield from iter_fields(subs[0], f"{path}[]." if listy else f"{path}.")


def _examples() -> dict[str, tuple[Any, str]]:
    """``{key path: (value, protocol file)}`` from the shipped protocols, first file wins."""
    from ..safe_yaml import load_yaml

    out: dict[str, tuple[Any, str]] = {}

    def walk(v, path: str, src: str):
        if isinstance(v, dict):
            for k, x in v.items():
                p = f"{path}.{k}" if path else str(k)
                out.setdefault(p, (x, src))
                walk(x, p, src)
        elif isinstance(v, list):
            for x in v:
                walk(x, f"{path}[]", src)

    for f in sorted(PROTOCOL_DIR.glob("*.yaml"), key=lambda p: (p.stem != "quick", p.stem)):
        walk(load_yaml(f, what="protocol"), "", f.name)
    return out


def _yaml_value(v) -> str:
    return json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v


def _doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def _describe(field) -> str:
    desc = field.description or ""
    subs = _models_in(field.annotation)
    if not desc and subs and subs[0].__doc__ and subs[0].__doc__ is not BaseModel.__doc__:
        desc = _doc(subs[0])
    return " ".join(desc.split())


#: Meanings of keys whose schema field has no description (the schema's own wins when it has one).
_MEANING = {
    "id": "the protocol's name (goes into every result)",
    "version": "the protocol's version (quote it: \"1.0\")",
    "title": "one line shown at the top of the report",
    "description": "what the protocol tests, shown in the report",
    "data.source": "'embedded': the synthetic cohort built offline; 'manifest': a CSV; 'bids': a BIDS folder "
                   "(`--data` sets both)",
    "data.manifest": "path of the manifest CSV or BIDS folder",
    "data.cohort.n": "subjects in the embedded cohort",
    "data.cohort.spacing_mm": "voxel size (mm) of the embedded cohort",
    "data.cohort.seed": "the embedded cohort's seed (same seed, same files)",
    "data.cohort.options": "further cohort parameters (neuroxai.data.cohort.CohortParams)",
    "data.shape": "model grid shape (voxels); default: the data's",
    "data.normalize": "intensity normalization per image (z-score in the brain, or percentiles)",
    "tasks[].id": "the task's name in the report",
    "tasks[].params": "the task's parameters (see 'Tasks' below)",
    "model.architecture": "a MODELS registry key (small_cnn, sfcn, resnet, densenet…)",
    "model.params": "the architecture's constructor arguments",
    "model.training": ("training parameters (neuroxai.models.train.TrainConfig: epochs, batch_size, lr, seed…); "
                       "`seeds: [0, 1, 2]` instead of `seed` trains one model per seed and judges the methods "
                       "over all of them (CIs over seeds and subjects, each seed's verdict beside)"),
    "model.training_config": "YAML under configs/training/ merged under training",
    "methods[].label": "a unique name for a method listed twice with other params",
    "methods[].params": "the method's parameters (see 'Methods' below)",
    "metrics[].name": "a METRICS registry key (see 'Metrics' below)",
    "metrics[].params": "the metric's parameters",
    "scoring.polarity": "which sign of attribution counts as evidence: the positive part, |attribution| or the "
                        "negative part",
    "scoring.smooth_fwhm_mm": "Gaussian smoothing of maps before scoring (FWHM, mm; 0 = none)",
    "scoring.restrict_to_brain": "score inside the brain mask only",
    "scoring.pointing_tolerance_mm": "pointing game: a hit within this distance of the ground truth counts",
    "statistics.bootstrap": "bootstrap resamples for the CIs",
    "statistics.ci_level": "confidence level of the CIs",
    "statistics.ci_method": "bootstrap CI: percentile or bias-corrected and accelerated",
    "statistics.test": "paired test against the baselines",
    "statistics.correction": "multiple-comparison correction of the paired tests",
    "statistics.n_permutations": "permutations of the permutation test",
    "statistics.seed": "seed of the bootstrap and permutations",
    "sanity.model_randomization.enabled": "run model-parameter randomization (Adebayo et al. 2018)",
    "sanity.model_randomization.mode": "randomize layers cumulatively from the output, or one at a time",
    "sanity.model_randomization.n_subjects": "subjects whose maps are compared",
    "sanity.model_randomization.similarity": "similarity of the maps before and after randomization",
    "validity.enabled": "check that the model uses the ground truth before judging methods",
    "validity.fill": "what replaces the ground truth (the training-split mean image)",
    "validity.n_placements": "equal-size regions elsewhere to compare with",
    "validity.min_drop_share": "share of above-chance performance that must go without the ground truth",
    "validity.min_kept_share": "share that must stay with the ground truth alone",
    "validity.min_effect_ratio": "the ground truth must move the score this many times more than a region elsewhere",
    "validity.seed": "seed of the placements",
    "acceptance[].kind": "the criterion (see 'Acceptance criteria' below)",
    "acceptance[].metric": "the metric the criterion reads",
    "acceptance[].margin": "ci_above_chance: the lower CI bound must exceed chance by this",
    "acceptance[].alpha": "significance level of the paired test (after correction)",
    "run.device": "where attribution and training run",
    "run.batch_size": "subjects per attribution chunk",
    "run.seed": "the run's seed (splits, initializations)",
}


def _meaning(path: str, field) -> str:
    return _describe(field) or _MEANING.get(path, "")


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _example(path: str, field, ex: dict) -> str:
    key = path.split(".")[-1].replace("[]", "")
    if _models_in(field.annotation):
        return ""  # a section: its keys have their own examples
    if path in ex:
        val, src = ex[path]
        return f"`{_short(f'{key}: {_yaml_value(val)}')}` ({src})"
    d = _default(field)
    return "" if d in ("required", "(section defaults)") else f"`{key}: {d.strip(chr(39))}`"


def _row(path: str, field, ex: dict) -> str:
    t = type_name(field.annotation)
    allowed = " / ".join(x[len("one of "):] for x in t.split(" or ") if x.startswith("one of "))
    return "| " + " | ".join(_cell(c) for c in (
        f"`{path}`", t, _default(field), ", ".join(x for x in (allowed, _bounds(field)) if x),
        _meaning(path, field), _example(path, field, ex))) + " |"


_HEAD = ["| key | type | default | allowed | meaning | example |", "|---|---|---|---|---|---|"]


def protocol_reference() -> str:
    """``docs/protocol.md``: every protocol key with its type, default, allowed values, meaning
    and one example."""
    ex = _examples()
    lines = ["# Protocol reference", "",
             "<!-- Generated from neuroxai/protocol/schema.py by `make protocol-docs` "
             "(neuroxai.protocol.reference); do not edit by hand. -->", "",
             "A protocol is a YAML file validated when it loads: an unknown key or a bad value is an error "
             "naming the key, its YAML line and the allowed values. `neuroxai protocols` lists the shipped "
             "protocols; `neuroxai protocols --show quick` prints one with each key explained. "
             "Keys of list items are written `tasks[].id`. Examples come from the shipped protocol named "
             "beside them, else they are the default.", "", "## Top-level keys", "", *_HEAD]
    fields = list(iter_fields())
    for path, field, owner in fields:
        if owner is Protocol and not _models_in(field.annotation):
            lines.append(_row(path, field, ex))
    for name, field in Protocol.model_fields.items():
        if not _models_in(field.annotation):
            continue
        lines += ["", f"## `{name}`", ""]
        if _meaning(name, field):
            lines += [_meaning(name, field), ""]
        lines += _HEAD
        lines += [_row(p, f, ex) for p, f, _ in fields if p != name and p.split(".")[0].split("[")[0] == name]
    lines += ["", "## Acceptance criteria (`acceptance[].kind`)", "", _criterion_doc(), ""]
    lines += _registry_doc()
    return "\n".join(lines)


def _registry_doc() -> list[str]:
    """The registry names a protocol may use, with their parameters and the first line of their docs."""
    from .registries import registries

    out = []
    for section, title in (("tasks", "Tasks (`tasks[].type`, `tasks[].params`)"),
                           ("methods", "Methods (`methods[].name`, `methods[].params`)"),
                           ("metrics", "Metrics (`metrics[].name`, `metrics[].params`)"),
                           ("models", "Architectures (`model.architecture`, `model.params`)")):
        reg = registries()[section]
        out += [f"## {title}", "", "| name | parameters | what it is |", "|---|---|---|"]
        for name in reg.names():
            params = reg.params(name)
            doc = " ".join((getattr(reg[name], "__doc__", "") or "").strip().split("\n\n")[0].split())
            out.append(f"| `{name}` | {', '.join(f'`{x}`' for x in params or ()) or '—'} | {_cell(doc)} |")
        out.append("")
    return out


def _criterion_doc() -> str:
    from .schema import Criterion

    doc = (Criterion.__doc__ or "").strip().splitlines()
    return "\n".join(line[4:] if line.startswith("    ") else line for line in doc)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def annotated_protocol(name: str | Path) -> str:
    """The YAML of a protocol (a shipped name or a path) with each key's type, default and
    meaning appended as a comment (``neuroxai protocols --show NAME``)."""
    from ..safe_yaml import compose_yaml
    import yaml

    path = resolve_protocol_path(name)
    text = path.read_text(encoding="utf-8")
    fields = {p: f for p, f, _ in iter_fields()}
    notes: dict[int, list[str]] = {}

    def walk(node, path: str):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = f"{path}.{k.value}" if path else str(k.value)
                f = fields.get(p)
                if f is not None:
                    d = _describe(f)
                    bits = [type_name(f.annotation), f"default {_default(f)}"] + ([d] if d else [])
                    notes.setdefault(k.start_mark.line, []).append(f"{k.value}: " + "; ".join(bits))
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                walk(v, f"{path}[]")

    walk(compose_yaml(text), "")
    # Notes go above their key's line: below it they could fall inside a block scalar (`key: >`).
    out = [f"# {path.name} — each key's type, default and meaning in the '#:' line above it; "
           "reference: docs/protocol.md"]
    for i, line in enumerate(text.splitlines()):
        indent = len(line) - len(line.lstrip(" -"))
        out += [" " * indent + "#: " + n for n in notes.get(i, [])]
        out.append(line)
    return "\n".join(out) + "\n"


def main() -> None:  # pragma: no cover - `make protocol-docs`
    import sys

    sys.stdout.write(protocol_reference())


if __name__ == "__main__":  # pragma: no cover
    main()
