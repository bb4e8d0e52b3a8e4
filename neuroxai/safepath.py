"""Paths built from untrusted ids, and folders written without following symlinks.

Task ids (from a protocol or a received ``results.json``), method labels and subject ids (from a
manifest) are data, not paths. Every file neuroxai writes under a name built from one goes
through this module:

- :func:`safe_name` turns any string (slashes, ``..``, absolute paths, NUL, newlines, 10,000
  characters, any unicode) into one file-name component: ASCII letters, digits, ``.``, ``_``,
  ``-``, never starting with ``.``, at most :data:`MAX_NAME` bytes;
- :func:`safe_label` does the same for a BIDS label (letters and digits only);
- :func:`inside` joins a folder and such components and checks, after resolving symlinks, that
  the result stays inside the folder;
- :func:`own_dir` creates a sub-folder of a folder neuroxai owns, replacing a symlink found on the
  way instead of following it: a received run whose ``report/figures`` links to someone's folder
  gets a real ``figures`` folder, and the linked folder is neither written nor deleted in.

A file that is itself a symlink is already safe: :func:`neuroxai.atomic.atomic_write` renames a
temporary file over the link, which replaces the link and leaves its target untouched.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from pathlib import Path

from .errors import RunError

#: The longest name :func:`safe_name` returns. File systems allow 255 bytes per component; the
#: rest is left for the suffixes the writers add (``_desc-<method>_saliency.nii.gz``, ``_mean_maps.png``)
#: and the temporary name ``atomic_write`` uses (``.<name>.<pid>.tmp.nii.gz``).
MAX_NAME = 96

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def _cap(name: str, text: str, limit: int) -> str:
    # a long name keeps its start (readable) and a digest of the whole (two long ids stay apart)
    return name if len(name) <= limit else f"{name[:limit - 11]}-{_digest(text)}"


def safe_name(text: object, *, limit: int = MAX_NAME) -> str:
    """One file-name component for ``text``: characters other than ``A-Za-z0-9._-`` become ``_``,
    leading dots are dropped (no ``..``, no hidden file), an empty result is ``_``, and a name
    over ``limit`` characters is cut and given a digest of the whole text."""
    text = str(text)
    name = _UNSAFE.sub("_", text).lstrip(".") or "_"
    return _cap(name, text, limit)


def safe_label(text: object, *, limit: int = MAX_NAME) -> str:
    """A BIDS label for ``text`` (letters and digits only, as ``desc-<label>`` is read back),
    ``x`` when nothing is left, cut to ``limit`` characters with a digest of the whole text."""
    text = str(text)
    name = re.sub(r"[^A-Za-z0-9]", "", text) or "x"
    return name if len(name) <= limit else f"{name[:limit - 10]}{_digest(text)}"


def _is_component(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "/" not in part and "\0" not in part and os.sep not in part


def _components(root: Path, parts) -> None:
    for p in parts:
        if not _is_component(str(p)):
            raise RunError("a name built from an id is not one file-name component", path=root,
                           expected="a name without '/', NUL, '.' or '..' (neuroxai.safepath.safe_name)",
                           found=repr(str(p)[:200]), fix="report this: every id must pass through safe_name")


def inside(root: str | Path, *parts: str) -> Path:
    """``root/part/...``, checked to stay inside ``root`` after resolving symlinks.

    Each part must be one file-name component (a literal of the writer, or :func:`safe_name` of
    an id); anything else — and a path that a symlink carries out of ``root`` — is a :class:`RunError`.
    """
    root = Path(root)
    _components(root, parts)
    path = root.joinpath(*parts)
    base = root.resolve()
    try:
        path.resolve().relative_to(base)
    except ValueError:
        raise RunError("a path to be written leads outside its output folder", path=path,
                       expected=f"a file inside {base}", found=f"it resolves to {path.resolve()}",
                       fix="remove the symlink inside the output folder, or choose a new --out") from None
    return path


def own_dir(root: str | Path, *parts: str) -> Path:
    """Create ``root/part/...`` as real folders and return it; a symlink met on the way (inside
    ``root``) is removed and replaced by a folder, never followed. A regular file on the way is a
    :class:`RunError` (it is not neuroxai's to delete)."""
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)  # the owned folder itself (given by the user, or made by us)
    _components(path, parts)  # single components: only a link (replaced below) could leave root
    for p in parts:
        path = path / p
        if path.is_symlink():
            path.unlink()  # replace the link: its target is someone else's
        if path.exists() and not path.is_dir():
            raise RunError("a file stands where neuroxai writes a folder", path=path, expected="a folder or nothing",
                           found="a file", fix="move the file away or choose a new --out")
        path.mkdir(exist_ok=True)
    return inside(root, *parts)


def describe_special(path: str | Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor absent — a folder, a named pipe
    (opening it waits forever), a device (``/dev/zero`` never ends), a socket, a symlink loop, a
    link to nothing, a name over the file system's limit — as words for an error; ``None`` for a
    regular file (or a link to one) and for a plain missing path. Nothing is opened."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself)"
        if exc.errno == errno.ENAMETOOLONG:
            return "a path with a name over the file system's limit (255 bytes per folder or file name)"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"a symbolic link to nothing ({os.readlink(path)})"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        return f"unreadable ({type(exc).__name__}: {exc.strerror or exc})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO): reading it would wait for a writer forever"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device (such as /dev/zero): not a file of finite length"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def refuse_out_inside_inputs(out: str | Path, inputs: dict) -> None:
    """Refuse an output folder inside one of the input folders (``{"--maps": path, ...}``) before
    anything is created: a folder written among a user's maps would be read back as maps by every
    later run on them."""
    o = Path(os.path.abspath(out)).resolve()
    for opt, p in inputs.items():
        if p is None or not Path(p).is_dir():
            continue
        src = Path(p).resolve()
        if o == src or o.is_relative_to(src):
            raise RunError(f"the output folder is inside {opt}", path=out, expected=f"an --out outside {src}",
                           found=f"--out {out} lies in {opt} {p}",
                           fix=f"choose an --out outside {opt} (e.g. beside it)")


def unique_names(names: dict[str, str]) -> dict[str, str]:
    """``{id: safe_name(id)}`` made one-to-one: ids whose safe names collide (``a/b`` and ``a_b``)
    get a digest of the id appended, so no writer overwrites another id's file."""
    seen: dict[str, list[str]] = {}
    for k, v in names.items():
        seen.setdefault(v, []).append(k)
    out = {}
    for v, ks in seen.items():
        for k in ks:
            out[k] = v if len(ks) == 1 else _cap(f"{v}-{_digest(k)}", k, MAX_NAME + 11)
    return out


__all__ = ["MAX_NAME", "safe_name", "safe_label", "inside", "own_dir", "unique_names", "describe_special"]
