"""Measure the per-volume cost of attribution and scoring and project it to a whole study.

Every cost is measured against the *floor*: one plain forward + backward-to-input pass of the same
model on the same batch, which no gradient method can beat (SmoothGrad with n samples costs ≥ n
such passes). ``neuroxai bench --project 45000`` prints the GPU-hours the paper's design needs
(GradCAM + LRP + SmoothGrad(n) + scoring + model randomization) on 1 and on N GPUs, assuming the
subjects are sharded evenly across GPUs (``torchrun``), which scales linearly since no step
communicates between subjects.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

DEFAULT_METHODS = {
    "gradcam": {},
    "lrp": {"composite": "epsilon_plus_flat"},
    "smoothgrad": {"n_samples": 50, "sigma": 0.1, "seed": 0},
}
SCORING_METRICS = ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc"]


def parse_bench_args(shape: str, batch: int, min_side: int = 32) -> tuple[tuple[int, int, int], int]:
    """``--shape D,H,W`` and ``--batch`` checked before a tensor exists: three integers, each side
    ≥ ``min_side`` (SFCN halves the grid five times) and the batch within one volume's memory cap
    (:mod:`neuroxai.limits`); else a :class:`~neuroxai.errors.ConfigError` naming the option."""
    from . import limits as L
    from .errors import ConfigError

    try:
        dims = tuple(int(s) for s in str(shape).split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or any(d < min_side for d in dims):
        raise ConfigError("--shape is not a usable grid", expected=f"three integers D,H,W, each ≥ {min_side} "
                          "(SFCN pools five times), e.g. 96,112,96", found=repr(shape),
                          fix="pass --shape 96,112,96 (a 2 mm brain) or 182,218,182 (1 mm)")
    L.check_grid(dims, "--shape")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError("--batch needs at least one volume", expected="an integer ≥ 1, e.g. 4",
                          found=repr(batch), fix="pass --batch 4")
    L.check_grid((batch, *dims), "--batch × --shape", )
    return dims, batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


@dataclass
class BenchResult:
    device: str
    shape: tuple[int, int, int]
    batch: int
    model: str
    floor_s_per_volume: float
    methods_s_per_volume: dict[str, float]
    scoring_s_per_volume: float
    n_layers: int
    params: dict = field(default_factory=dict)

    def as_multiple_of_floor(self) -> dict[str, float]:
        return {k: v / self.floor_s_per_volume for k, v in self.methods_s_per_volume.items()}


def plain_pass(model, x, target):
    """The floor: one forward and one backward pass to the input."""
    xg = x.detach().requires_grad_(True)
    out = model(xg)
    sel = out.gather(1, target.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(sel, xg)
    return g


def measure(model: torch.nn.Module, shape=(96, 112, 96), batch: int = 4, *, device="cpu",
            methods: dict | None = None, repeats: int = 3, model_name: str = "sfcn",
            progress=None) -> BenchResult:
    """Time the floor, each method and the scoring on one ``(batch, 1, *shape)`` input."""
    from .attribution import attribute
    from .scoring import score

    dev = torch.device(device)
    methods = DEFAULT_METHODS if methods is None else methods
    model = model.to(dev).eval()
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 1, *shape, generator=g).to(dev)
    target = torch.zeros(batch, dtype=torch.long, device=dev)
    floor = _time(lambda: plain_pass(model, x, target), dev, repeats) / batch
    per = {}
    maps = None
    for name, params in methods.items():
        per[name] = _time(lambda: attribute(model, x, target, name, **params), dev,
                          max(1, repeats if name != "smoothgrad" else 1)) / batch
        if progress:
            progress(name)
    maps = attribute(model, x, target, "gradient")
    mask = torch.zeros(batch, 1, *shape, dtype=torch.bool, device=dev)
    d, h, w = shape
    mask[:, :, d // 3: d // 2, h // 3: h // 2, w // 3: w // 2] = True
    brain = torch.ones_like(mask)
    sc = _time(lambda: score(maps, mask, SCORING_METRICS, brain_mask=brain), dev, repeats) / batch
    n_layers = sum(1 for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
    return BenchResult(str(dev), tuple(shape), batch, model_name, floor, per, sc, n_layers,
                       {k: dict(v) for k, v in methods.items()})


def project(res: BenchResult, n_subjects: int, *, n_gpus=(1, 8), randomization_subjects: int = 32,
            n_tasks: int = 2) -> dict:
    """GPU-hours for ``n_subjects`` × ``n_tasks`` with every method, scoring and randomization.

    Model randomization re-attributes ``randomization_subjects`` per task once per randomized
    layer (cascading, Adebayo et al. 2018).
    """
    per_volume = sum(res.methods_s_per_volume.values()) + res.scoring_s_per_volume * len(res.methods_s_per_volume)
    main_s = n_subjects * n_tasks * per_volume
    rand_s = randomization_subjects * n_tasks * res.n_layers * sum(res.methods_s_per_volume.values())
    total_h = (main_s + rand_s) / 3600
    return {"n_subjects": n_subjects, "n_tasks": n_tasks, "seconds_per_volume_all_methods": per_volume,
            "gpu_hours": total_h, "wall_hours": {str(k): total_h / k for k in n_gpus},
            "randomization_hours": rand_s / 3600,
            "scoring_fraction": res.scoring_s_per_volume * len(res.methods_s_per_volume) / per_volume}
