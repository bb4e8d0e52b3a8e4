"""Every setting of a protocol checked when it loads, before any data is read.

The schema (:mod:`neuroxai.protocol.schema`) checks the protocol's own keys; this module checks
what the keys hand on to the layers, against each entry's registration:

- every task, model, method and metric parameter: its name (:meth:`Registry.check`, the one
  parameter check; an entry registered with a ``check`` fact, such as LRP's rules, also its own
  check), its type (the registered function's annotation or default: an ``int`` parameter takes
  an integer, a ``float`` a finite number, a ``bool`` true/false) and the value
  conventions parameter names carry (``n_*``, ``*steps``, ``*_samples``: ≥ 1; ``sigma``,
  ``epsilon``, ``*_mm``, ``*_ml``: ≥ 0; ``dropout`` in [0, 1); widths ≥ 1);
- the training parameters (:class:`~neuroxai.models.train.TrainConfig`, with the training config
  YAML they name), and the model config YAML;
- sizes no machine can hold (:mod:`neuroxai.limits`): cohort size, grid, resamples, seeds, and the
  model's parameter count (the architecture is built on PyTorch's ``meta`` device: no memory).

So ``epochz: 3``, ``margin_mm`` misspelt, ``sigma: -1`` or ``lr: .nan`` fail in a second, not after
the cohort was built and a model trained.
"""
from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ConfigError, NeuroXAIError
from .. import limits as L

_COUNT_SUFFIXES = ("_samples", "steps", "_patches")
_NONNEG = {"sigma", "epsilon", "gamma", "stabilizer", "strength", "min_volume_ml"}
_WIDTHS = {"channels", "block_inplanes", "layers", "init_features", "growth_rate"}


def check_settings(proto, path: str | Path | None = None) -> None:
    """Raise a :class:`ConfigError` (naming ``path``, the key, what was expected and found, and
    the fix) for the first setting of ``proto`` its layer would refuse; read no data."""
    from .registries import registries

    reg = registries()
    _check_sizes(proto, path)
    for i, t in enumerate(proto.tasks):
        _check_params(reg["tasks"], t.type, t.params, f"tasks.{i}.params", path)
        if t.type == "null_control" and isinstance(t.params, Mapping):  # its other parameters are its base's
            base = t.params.get("base", "region_volume")
            if base not in reg["tasks"] or base == "null_control":
                raise ConfigError(f"tasks.{i}.params.base: not a task null_control can permute", path=path,
                                  expected=[n for n in reg["tasks"].names() if n != "null_control"],
                                  found=repr(base), fix="name the task whose labels are permuted")
            rest = {k: v for k, v in t.params.items() if k not in ("base", "permutation_seed")}
            _check_params(reg["tasks"], base, rest, f"tasks.{i}.params", path)
        if proto.data.source == "embedded":
            _check_regions(t.params, f"tasks.{i}.params", path)
    for section in ("methods", "metrics"):
        for i, m in enumerate(getattr(proto, section)):
            _check_params(reg[section], m.name, m.params, f"{section}.{i}.params", path)
    _check_kind(proto, reg["tasks"], path)
    if proto.kind == "audit":
        return
    _check_training(proto, path)
    _check_model(proto, reg["models"], path)


# ---------------------------------------------------------------- sizes


def _check_sizes(proto, path) -> None:
    st, d = proto.statistics, proto.data
    L.check_at_most(st.bootstrap, L.MAX_RESAMPLES, "statistics.bootstrap", path=path)
    L.check_at_most(st.n_permutations, L.MAX_RESAMPLES, "statistics.n_permutations", path=path)
    for key, v in (("statistics.seed", st.seed), ("run.seed", proto.run.seed), ("validity.seed", proto.validity.seed),
                   ("data.cohort.seed", d.cohort.seed)):
        L.check_seed(v, key, path=path)
    L.check_at_most(proto.sanity.model_randomization.n_subjects, L.MAX_COHORT_SUBJECTS,
                    "sanity.model_randomization.n_subjects", path=path)
    L.check_at_most(proto.run.batch_size, 4096, "run.batch_size", path=path)
    if proto.kind == "audit":
        return
    if d.spacing_mm is not None:
        L.check_spacing(d.spacing_mm, "data.spacing_mm", path=path)
    if d.shape is not None:
        L.check_grid(d.shape, "data.shape", path=path)
    if d.source == "embedded":
        L.check_at_most(d.cohort.n, L.MAX_COHORT_SUBJECTS, "data.cohort.n", path=path)
        L.check_spacing(d.cohort.spacing_mm, "data.cohort.spacing_mm", path=path)
        spacing = d.spacing_mm or d.cohort.spacing_mm
        if d.shape is None:
            L.check_grid(L.cohort_grid(min(spacing, d.cohort.spacing_mm)), "the embedded cohort's grid at "
                         f"{min(spacing, d.cohort.spacing_mm):g} mm", path=path)


# ---------------------------------------------------------------- registered parameters


def _hints(fn) -> dict:
    target = inspect.unwrap(fn)
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an annotation naming a type not importable here: fall back per parameter
        return {}


def _check_params(registry, name: str, params, key: str, path) -> None:
    if not isinstance(params, Mapping):
        raise ConfigError(f"{key} is not a mapping of parameters", path=path, expected="name: value pairs",
                          found=type(params).__name__, fix=f"write {key} as {{name: value, ...}}")
    try:
        registry.check(name, params, path=None)
    except NeuroXAIError as exc:
        raise ConfigError(f"{key}: {exc.args[0].splitlines()[0]}", path=path, expected=exc.expected,
                          found=exc.found, fix=exc.fix) from None
    fn = registry[name]
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    hints = _hints(fn)
    for pname, value in (params.items() if sig is not None else ()):
        p = sig.parameters.get(pname)
        if p is None:
            continue  # a **kwargs entry: its function checks it
        check_value(value, hints.get(pname, p.annotation), p.default, f"{key}.{pname}", path)
    _check_fact(registry, name, params, key, path)


def _check_fact(registry, name: str, params, key: str, path) -> None:
    """An entry registered with a ``check`` fact (LRP: its rules and their parameters) checks what
    its signature cannot say, here, before any data is read."""
    check = registry.facts(name).get("check")
    if check is None:
        return
    try:
        check(params)
    except NeuroXAIError as exc:
        raise ConfigError(f"{key}: {exc.args[0].splitlines()[0]}", path=path, expected=exc.expected,
                          found=exc.found, fix=exc.fix) from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _kind(hint, default):
    """``(base type, optional, element type)`` of a simple annotation, else from the default."""
    optional = False
    origin = typing.get_origin(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else None
        origin = typing.get_origin(hint)
    if hint in (int, float, bool, str):
        return hint, optional, None
    if origin in (Sequence, list, tuple) or hint in (list, tuple):
        args = typing.get_args(hint)
        el = args[0] if args and args[0] in (int, float, str) else None
        return list, optional, el
    # no usable annotation: no type check (a default's type is no contract: occlusion's
    # ``patch=4`` also takes a list or mm)
    return None, optional, None


def check_value(value, hint, default, key: str, path) -> None:
    """``value`` against a parameter's type and its name's conventions (see the module doc)."""
    base, optional, el = _kind(hint, default)
    pname = key.rsplit(".", 1)[-1]

    def bad(expected, fix=None):
        raise ConfigError(f"{key} has a value its {('registered ' if base else '')}parameter does not take",
                          path=path, expected=expected, found=repr(value)[:200],
                          fix=fix or f"set {key} to {expected} (or drop it for the default {default!r})")

    if value is None:
        if base is not None and not optional and default is not None:
            bad(f"a {base.__name__}")
        return
    if base is bool and not isinstance(value, bool):
        bad("true or false")
    if base is int:
        if not _is_int(value):
            bad("an integer")
    elif base is float:
        if not _is_number(value):
            bad("a number")
    elif base is str and not isinstance(value, str):
        bad("a string")
    if base is list and el in (int, float):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            bad(f"a list of {el.__name__}s")
        for v in value:
            if not (_is_int(v) if el is int else _is_number(v)) or not math.isfinite(v):
                bad(f"a list of finite {el.__name__}s")
    if _is_number(value) and not math.isfinite(value):
        bad("a finite number")
    _conventions(pname, value, bad)


def _conventions(pname: str, value, bad) -> None:
    if (pname == "seed" or pname.endswith("_seed")) and not (_is_int(value) and 0 <= value <= L.MAX_SEED):
        bad(f"an integer seed in [0, {L.MAX_SEED}]")
    if _is_number(value):
        count = pname.startswith("n_") or pname.endswith(_COUNT_SUFFIXES) or pname.startswith("batch_")
        if count and not 1 <= value <= L.MAX_SAMPLES:
            bad(f"an integer in [1, {L.MAX_SAMPLES:,}]")
        if (pname in _NONNEG or pname.endswith(("_mm", "_ml"))) and value < 0:
            bad("a number ≥ 0")
        if pname == "dropout" and not 0 <= value < 1:
            bad("a probability in [0, 1)")
        if pname in _WIDTHS and not 1 <= value <= L.MAX_WIDTH:
            bad(f"a width in [1, {L.MAX_WIDTH}]")
    elif pname in _WIDTHS and isinstance(value, Sequence) and not isinstance(value, str):
        if any(not _is_int(v) or not 1 <= v <= L.MAX_WIDTH for v in value):
            bad(f"widths (integers) in [1, {L.MAX_WIDTH}]")


def _check_regions(params, key: str, path) -> None:
    """Region names of a task on the embedded cohort (AAL3 labels, known without reading data):
    a misspelt ``Hipocampus_L`` fails here, not after the cohort was generated."""
    if params.get("labels_tsv"):
        return
    for pname in ("regions", "region"):
        if pname in params:
            import pandas as pd

            from ..tasks.regions import label_table, resolve_regions

            try:
                resolve_regions(params[pname], label_table(pd.DataFrame()))
            except NeuroXAIError as exc:
                raise ConfigError(f"{key}.{pname}: {exc.args[0].splitlines()[0]}", path=path, expected=exc.expected,
                                  found=exc.found, fix=exc.fix) from None


# ---------------------------------------------------------------- kind: reference

#: ``scoring:`` keys a reference protocol reads: how a map's sign is taken before its regions are
#: ranked. The others (smoothing, cutoffs, ground-truth dilation) act on a ground truth it lacks.
REFERENCE_SCORING = ("polarity", "sign")


def _refuse(key: str, found, expected: str, fix: str, path) -> None:
    raise ConfigError(f"{key}: not a setting of a reference protocol", path=path, expected=expected,
                      found=found, fix=fix)


def _check_kind(proto, tasks, path) -> None:
    """Settings that make no sense for the protocol's kind: a known-signal-free task (``user_label``)
    or a ``reference:`` section outside ``kind: reference``; inside it, everything that needs a
    ground truth (metrics, acceptance criteria, validity, sanity checks, the oracle map), a null
    control, several model seeds, more than one task, and claimed regions the atlas lacks."""
    if proto.kind != "reference":
        for i, t in enumerate(proto.tasks):
            if t.type in tasks and tasks.facts(t.type).get("known_signal", True) is False:
                raise ConfigError(f"tasks.{i}.type: {t.type!r} has no known signal to validate against",
                                  path=path, expected="a known-signal task (region_volume, lesion, …)",
                                  found=f"{t.type} in a kind: {proto.kind} protocol",
                                  fix="use kind: reference, which compares the methods with the model's causal "
                                      "atlas occlusion instead of a ground truth")
        if proto.reference is not None:
            _refuse("reference", "a reference: section", "kind: reference", f"set kind: reference, or remove "
                    f"the reference: section from this {proto.kind} protocol", path)
        return
    fix_gt = "remove it: a reference protocol has no ground truth (its criteria are under reference:)"
    if proto.metrics:
        _refuse("metrics", [m.key for m in proto.metrics], "no metrics (nothing is scored against a mask)",
                fix_gt, path)
    if proto.acceptance:
        _refuse("acceptance", [c.kind for c in proto.acceptance], "no acceptance criteria",
                "remove them and set reference.min_spearman / reference.min_rbo", path)
    for key in ("validity", "sanity"):
        if key in proto.model_fields_set:
            _refuse(key, "a " + key + ": section", "none (its checks need a ground truth)", fix_gt, path)
    extra = sorted(proto.scoring.model_fields_set - set(REFERENCE_SCORING))
    if extra:
        _refuse(f"scoring.{extra[0]}", extra, f"only {list(REFERENCE_SCORING)} (how a map's sign is read)",
                f"remove scoring.{', scoring.'.join(extra)}", path)
    if len(proto.tasks) != 1:
        raise ConfigError("tasks: a reference protocol judges one model, on one label", path=path,
                          expected="exactly one task (e.g. type: user_label)", found=[t.id for t in proto.tasks],
                          fix="keep one task; run one protocol per label")
    t = proto.tasks[0]
    if "null_control" in t.model_fields_set and t.null_control:
        _refuse("tasks.0.null_control", True, "false (no random-label floor: the reference is the model's own "
                "occlusion)", "remove null_control", path)
    from ..attribution.baselines import needs

    for i, m in enumerate(proto.methods):
        if "mask" in needs(m.name):
            _refuse(f"methods.{i}.name", m.name, "a method that needs no ground-truth mask",
                    f"remove {m.name!r} (it is the ground truth used as a map)", path)
    if "seeds" in proto.model.training:
        _refuse("model.training.seeds", proto.model.training["seeds"], "one model (training.seed)",
                "train one model per protocol run", path)
    if proto.data.source == "embedded" and proto.reference is not None:
        for i, c in enumerate(proto.reference.claims):
            _check_regions({"region": c.region}, f"reference.claims.{i}", path)


# ---------------------------------------------------------------- model and training


def _check_training(proto, path) -> None:
    from ..models.train import TrainConfig
    from .model_configs import config_yaml

    m = proto.model
    cfg = {**config_yaml("training", m.training_config), **m.training}
    if "seeds" in cfg:
        _check_seeds(cfg, m, path)
        cfg = {k: v for k, v in cfg.items() if k != "seeds"}
    try:
        TrainConfig(**{**cfg, "device": "cpu"})
    except NeuroXAIError as exc:
        raise ConfigError(f"model.training: {exc.args[0].splitlines()[0]}", path=path, expected=exc.expected,
                          found=exc.found, fix=exc.fix or "correct model.training (or its training_config YAML)") \
            from None
    if "seed" in cfg:
        L.check_seed(cfg["seed"], "model.training.seed", path=path)


def _check_seeds(cfg: dict, m, path) -> None:
    """``training.seeds``: a list of distinct seeds, without ``seed`` beside it, for models this
    protocol trains (a given checkpoint is one model)."""
    seeds = cfg["seeds"]
    fix = "write e.g. `training: {seeds: [0, 1, 2]}` (and no `seed:` beside it)"
    if not isinstance(seeds, (list, tuple)) or not seeds or isinstance(seeds, str):
        raise ConfigError("model.training.seeds must be a non-empty list of seeds", path=path,
                          expected="a list such as [0, 1, 2]", found=repr(seeds), fix=fix)
    for s in seeds:
        L.check_seed(s, "model.training.seeds", path=path)
    if len(set(int(s) for s in seeds)) != len(seeds):
        raise ConfigError("model.training.seeds repeats a seed: the same model would count twice", path=path,
                          expected="distinct seeds", found=list(seeds), fix="list each seed once")
    L.check_at_most(len(seeds), L.MAX_SEEDS, "model.training.seeds", path=path, fix="train fewer seeds")
    if "seed" in cfg:
        raise ConfigError("model.training sets both seed and seeds", path=path, expected="one of them",
                          found={"seed": cfg["seed"], "seeds": list(seeds)}, fix=fix)
    if m.checkpoint:
        raise ConfigError("model.training.seeds trains several models, but model.checkpoint gives one",
                          path=path, expected="seeds without a checkpoint (models this protocol trains)",
                          found={"checkpoint": m.checkpoint, "seeds": list(seeds)},
                          fix="remove model.training.seeds, or train instead of loading the checkpoint")


def _check_model(proto, models, path) -> None:
    import torch

    from .model_configs import config_yaml

    m = proto.model
    params = {**config_yaml("models", m.config), **m.params}
    if not isinstance(m.architecture, str) or m.architecture not in models:
        raise ConfigError(f"unknown model architecture {m.architecture!r}", path=path, expected=models.names(),
                          found=repr(m.architecture), fix="use one of the registered architectures")
    fixed = sorted({"in_channels", "n_outputs"} & set(params))
    if fixed:
        raise ConfigError(f"model.params sets {fixed}, which the task decides", path=path,
                          expected="architecture parameters other than in_channels and n_outputs",
                          found=fixed, fix=f"remove {fixed} from model.params (or from the model config YAML)")
    _check_params(models, m.architecture, params, "model.params", path)
    try:  # built on the meta device: no memory, but every constructor check runs
        with torch.device("meta"):
            net = models[m.architecture](in_channels=1, n_outputs=2, **params)
    except NeuroXAIError as exc:
        raise ConfigError(f"model.params: {exc.args[0].splitlines()[0]}", path=path, expected=exc.expected,
                          found=exc.found, fix=exc.fix) from None
    n = sum(p.numel() for p in net.parameters())
    L.check_at_most(n, L.MAX_MODEL_PARAMETERS, f"model {m.architecture!r} parameters", path=path,
                    fix="use narrower layers (model.params)")


__all__ = ["check_settings", "check_value"]
