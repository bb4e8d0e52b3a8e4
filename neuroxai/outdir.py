"""Output folders neuroxai owns.

Every folder neuroxai writes into (a run, an audit, a report, a cohort) carries a marker file,
``.neuroxai``, written before anything else. A folder that is not empty and has no marker holds
someone else's files: neuroxai refuses to write there, so it never overwrites or deletes a file
it did not create.
"""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import atomic_write, is_temporary_of
from .errors import RunError
from .safepath import describe_special

#: The file that says "neuroxai created this folder" (JSON: kind, tool).
MARKER = ".neuroxai"


def claim_dir(path: str | Path, kind: str, *, reuse: bool = True) -> Path:
    """Make ``path`` a folder of kind ``kind`` ("run", "audit", "report", "cohort") that neuroxai
    owns, or refuse with a :class:`RunError`.

    An absent or empty folder is created and marked. A marked folder of the same kind is reused
    when ``reuse`` (its files are neuroxai's own), refused otherwise. Anything else — a file, a
    folder of another kind, a non-empty folder without the marker — is refused: nothing in it
    is overwritten or deleted.
    """
    path = Path(path)
    special = describe_special(path)  # a name over 255 bytes, a link loop or a dangling link: named
    if special is not None and special != "a folder":
        raise RunError(f"the output path is {special}", path=path, expected="a new or empty folder",
                       found=special, fix="choose another --out (short names, no links)")
    if path.exists() and not path.is_dir():
        raise RunError("the output path is a file, not a folder", path=path, expected="a new or empty folder",
                       found="an existing file", fix="choose another --out")
    marker = path / MARKER
    if not marker.exists() and _legacy(path, kind):
        _write_marker(path, kind)  # a run written before the marker existed
    if marker.is_file():
        try:
            found = json.loads(marker.read_text()).get("kind")
        except (ValueError, OSError, AttributeError):
            found = None
        if found != kind:
            raise RunError(f"the folder holds a neuroxai {found or 'unknown'} output, not a {kind}", path=path,
                           expected=f"a new folder or a {kind} folder", found=f"{MARKER} of kind {found!r}",
                           fix="choose another --out")
        if not reuse:
            raise RunError(f"the folder already holds a {kind}", path=path, expected="a new or empty folder",
                           found=f"a {kind} written by neuroxai",
                           fix="pass --resume to continue it, or choose a new --out")
        return path
    if path.is_dir():
        try:
            # a peer rank's marker being written does not count
            others = sorted(p.name for p in path.iterdir() if p.name != MARKER and not is_temporary_of(p.name, MARKER))
        except OSError as exc:
            raise RunError("cannot list the output folder", path=path, found=f"{type(exc).__name__}: {exc}",
                           fix="check its permissions or choose another --out") from exc
        if others:
            raise RunError("the folder holds files neuroxai did not write; it will not overwrite or delete them",
                           path=path, expected=f"a new or empty folder (or one neuroxai created: it holds {MARKER})",
                           found=f"{len(others)} entries: {', '.join(others[:5])}{' …' if len(others) > 5 else ''}",
                           fix="choose a new or empty --out")
    _write_marker(path, kind)
    return path


def _write_marker(path: Path, kind: str) -> None:
    try:
        atomic_write(path / MARKER, json.dumps({"kind": kind, "tool": "neuroxai"}))
    except OSError as exc:
        raise RunError("cannot write to the output folder", path=path, found=f"{type(exc).__name__}: {exc}",
                       fix="check its permissions or choose another --out") from exc


def _legacy(path: Path, kind: str) -> bool:
    """A run, report or cohort folder of a neuroxai from before the marker (recognised by what it
    wrote: a run's run.json with protocol + provenance and its stages/; a report's
    results.schema.json; a cohort's cohort.json with its parameters)."""
    try:
        if kind == "run":
            obj = json.loads((path / "run.json").read_text())
            return isinstance(obj, dict) and {"protocol", "provenance"} <= set(obj) and (path / "stages").is_dir()
        if kind == "report":
            return (path / "results.schema.json").is_file() and (path / "index.html").is_file()
        if kind == "cohort":
            return "params" in json.loads((path / "cohort.json").read_text())
    except (OSError, ValueError, TypeError):  # unreadable, not JSON, or JSON of another shape
        return False
    return False
