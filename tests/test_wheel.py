"""The package installs from a wheel: built offline, installed (not editable) into a fresh virtual
environment and run from another folder, it finds its shipped protocols, configs and report
template inside itself, not in the checkout.

The fresh environment sees the already-installed dependencies (torch, monai, nibabel, ...) through
a ``.pth`` file of plain paths to this interpreter's site-packages: a plain path line adds the
folder to ``sys.path`` without running the ``.pth`` files in it, so the editable install's finder
never loads and ``import neuroxai`` can only find the wheel's copy.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from neuroxai.report.schema import read_results

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "neuroxai"

# Smaller and faster than conftest.TINY_PROTOCOL; it names shipped configs, so the config lookup
# runs from the wheel (a name it cannot resolve is exit code 2).
SMOKE_PROTOCOL = """
id: wheel-smoke
version: "0.1"
title: installed-wheel smoke test
data:
  source: embedded
  cohort: {n: 24, spacing_mm: 8.0, seed: 0}
tasks:
  - id: hippo
    type: region_volume
    params: {regions: [Hippocampus_L, Hippocampus_R], split: [0.5, 0.1, 0.4]}
    null_control: false
model:
  architecture: small_cnn
  config: small_cnn
  params: {channels: [4, 8]}
  training_config: default
  training: {epochs: 1, batch_size: 8, lr: 0.003, seed: 0}
methods:
  - name: gradient
  - name: random
    params: {seed: 0}
metrics:
  - name: relevance_mass_accuracy
statistics: {bootstrap: 100, seed: 0}
sanity:
  model_randomization: {enabled: false}
validity: {enabled: false}
acceptance:
  - {kind: beats_random, metric: relevance_mass_accuracy}
run: {device: cpu, batch_size: 4, save_maps: none, seed: 0}
"""

SHIPPED_PROTOCOLS = ("quick", "siegel2025", "preclinical-audit", "siegel2025-cpu")


def _require_tools() -> None:
    """CI must run this test: a missing build tool is a failure that says what to install."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name):
        try:
            return tuple(int(x) for x in version(name).split(".")[:2])
        except PackageNotFoundError:
            return None

    fix = f"install them into {sys.executable} (`pip install -e '.[dev]'`)"
    if importlib.util.find_spec("venv") is None:
        pytest.fail(f"the venv module is missing (Debian: apt-get install python3-venv); {fix}")
    if (ver("pip") or (0,)) < (22, 3):
        pytest.fail(f"pip >= 22.3 (for --python) is needed, found {ver('pip')}; {fix}")
    # --no-build-isolation builds with this interpreter's setuptools; from 70.1 it needs no `wheel`.
    if (ver("setuptools") or (0,)) < (70, 1) and ver("wheel") is None:
        pytest.fail(f"building the wheel needs setuptools >= 70.1 (or `wheel`), found {ver('setuptools')}; {fix}")


def _run(cmd, cwd: Path, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _check(r: subprocess.CompletedProcess, what: str, ok=(0,)) -> subprocess.CompletedProcess:
    assert r.returncode in ok, f"{what}: exit code {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _data_files(root: Path) -> list[str]:
    """Non-Python files of the package source, as wheel paths (``neuroxai/...``)."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root.parent)
        if (p.is_file() and p.suffix not in (".py", ".pyc")
                and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts)):
            out.append(rel.as_posix())
    return sorted(out)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, fresh venv root, environment for its commands)."""
    _require_tools()
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy so the build never writes build/ or egg-info into the checkout, nor packs
    # stale files a previous build left in build/lib.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "neuroxai", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    _check(_run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
                 "--no-index", "--disable-pip-version-check", "-q", "-w", dist], cwd=tmp), "pip wheel")
    wheel, = dist.glob("neuroxai-*.whl")

    venv = tmp / "venv"
    _check(_run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp), "python -m venv")
    py = venv / "bin" / "python"
    _check(_run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
                 "--disable-pip-version-check", "-q", wheel], cwd=tmp), "pip install the wheel")

    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "_neuroxai_test_deps.pth").write_text("\n".join(deps) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONNOUSERSITE="1", COLUMNS="200",  # wide enough that rich never cuts an id
               NEUROXAI_CACHE=str(tmp / "cache"))  # as on a fresh machine (the atlas resampling: ~1 s)
    env.setdefault("OMP_NUM_THREADS", "2")
    return wheel, venv, env


def test_wheel_holds_every_data_file_of_the_package(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _data_files(PACKAGE)
    assert [f for f in expected if f not in names] == []
    for pid in SHIPPED_PROTOCOLS:
        assert f"neuroxai/protocols/{pid}.yaml" in names
    assert {"neuroxai/configs/models/small_cnn.yaml", "neuroxai/configs/training/default.yaml",
            "neuroxai/report/templates/report.html.j2", "neuroxai/protocols/README.md"} <= names


def test_installed_package_reads_its_own_data(installed, tmp_path):
    _, venv, env = installed
    code = ("import json, neuroxai\n"
            "from neuroxai.protocol.schema import PROTOCOL_DIR\n"
            "from neuroxai.protocol.runner import CONFIG_DIR, _config_yaml\n"
            "from neuroxai.report.build import TEMPLATES\n"
            "print(json.dumps({'file': neuroxai.__file__, 'protocols': str(PROTOCOL_DIR),\n"
            "                  'configs': str(CONFIG_DIR), 'templates': str(TEMPLATES),\n"
            "                  'small_cnn': _config_yaml('models', 'small_cnn')}))\n")
    r = _check(_run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=env), "import neuroxai")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    root = venv.resolve()
    for key in ("file", "protocols", "configs", "templates"):
        path = Path(got[key]).resolve()
        assert path.is_relative_to(root), f"{key} comes from {path}, not from the wheel in {root}"
        assert not path.is_relative_to(REPO), f"{key} comes from the checkout: {path}"
    assert got["small_cnn"]["channels"] == [8, 16, 32]  # configs/models/small_cnn.yaml


def test_installed_cli_lists_protocols_and_validates(installed, tmp_path):
    _, venv, env = installed
    cli = venv / "bin" / "neuroxai"
    r = _check(_run([cli, "protocols"], cwd=tmp_path, env=env), "neuroxai protocols")
    for pid in SHIPPED_PROTOCOLS:
        assert pid in r.stdout, f"{pid!r} missing from `neuroxai protocols`:\n{r.stdout}"

    (tmp_path / "smoke.yaml").write_text(SMOKE_PROTOCOL)
    _check(_run([cli, "validate", "smoke.yaml", "--out", "run", "--quiet"], cwd=tmp_path, env=env),
           "neuroxai validate", ok=(0, 1, 3))  # 1 FAIL, 3 INCONCLUSIVE: a verdict, not an error
    out = tmp_path / "run"
    assert (out / "report" / "index.html").stat().st_size > 1000
    results = read_results(out / "results.json")  # the installed package writes this schema
    assert results.protocol.id == "wheel-smoke"
    assert {m.name for m in results.methods} == {"gradient", "random"}
