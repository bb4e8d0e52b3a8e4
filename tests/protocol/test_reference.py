"""The protocol reference is generated from the schema: docs/protocol.md must equal what the schema
gives now, name every key, and `neuroxai protocols --show` annotates a shipped protocol without
changing what it loads to."""
from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from neuroxai.cli import app
from neuroxai.protocol.reference import iter_fields, protocol_reference
from neuroxai.protocol.schema import Protocol, resolve_protocol_path

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_committed_reference_equals_the_schema():
    assert DOC.read_text(encoding="utf-8") == protocol_reference(), (
        "docs/protocol.md is stale: run `make protocol-docs` (python -m neuroxai.protocol.reference)")


def test_reference_lists_every_key_with_type_default_and_allowed_values():
    doc = protocol_reference()
    for path, field, owner in iter_fields():
        section = owner is Protocol and path not in ("id", "version", "kind", "title", "description")
        assert (f"## `{path}`" if section else f"| `{path}` |") in doc, path
    row = next(line for line in doc.splitlines() if line.startswith("| `run.target` |"))
    assert "'label', 'predicted', 'positive'" in row and "'label'" in row.split("|")[3]
    row = next(line for line in doc.splitlines() if line.startswith("| `statistics.bootstrap` |"))
    assert "≥ 100" in row and "| 2000 |" in row
    assert "SDs of the brain" in doc  # the positive control's strength unit


def test_protocols_show_annotates_without_changing_the_protocol():
    r = CliRunner().invoke(app, ["protocols", "--show", "quick"])
    assert r.exit_code == 0, r.output
    text = resolve_protocol_path("quick").read_text()
    assert yaml.safe_load(r.output) == yaml.safe_load(text)  # annotations are comments only
    assert "#: polarity: one of 'positive', 'absolute', 'negative'; default 'absolute'" in r.output
    assert "#: n_subjects: int; default 8" in r.output
    assert Protocol.model_validate(yaml.safe_load(r.output)).id == "quick"


def test_protocols_describes_each_shipped_protocol():
    r = CliRunner().invoke(app, ["protocols"])
    assert r.exit_code == 0
    for line in ("quick v2.2 (validate)", "tasks: hippocampus_volume (region_volume), positive_control",
                 "methods: gradcam, lrp, smoothgrad, gradient, random, oracle"):
        assert line in r.output
