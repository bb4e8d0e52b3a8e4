"""The one way neuroxai writes a file: into a hidden temporary file beside it, then ``os.replace``.

A reader (another rank, a resumed run, a person) sees the old file or the new one, never half of
one; a crash or Ctrl-C leaves no temporary file behind. Every writer of the package goes through
:func:`atomic_write`: bytes and text directly, anything else (``torch.save``, ``np.save``,
``nib.save``, ``DataFrame.to_csv``) as a ``write(tmp_path)`` callback. The temporary name keeps
the file's extension, so a writer that picks its format from the name (``.nii.gz``) or appends one
when it is missing (``np.save`` → ``.npy``) writes exactly the temporary path.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Optional, Union


class AtomicStream:
    """A file written over time (a table appended chunk by chunk) that appears at ``path`` at once:
    :meth:`tmp` is the temporary file to write; :meth:`commit` renames it into place, :meth:`abort`
    removes it (a killed run leaves nothing under the final name)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _named(exc, self.path) from exc
        self.tmp = _temp_path(self.path)
        if self.tmp.is_symlink() or self.tmp.exists():
            self.tmp.unlink()

    def commit(self) -> Path:
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            named = _named(exc, self.path)
            if named is exc:
                raise
            raise named from exc
        return self.path

    def abort(self) -> None:
        if self.tmp.is_symlink() or self.tmp.exists():
            self.tmp.unlink()


def _temp_path(path: Path) -> Path:
    ext = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{ext}")


def is_temporary_of(entry: str, name: str) -> bool:
    """Whether the file name ``entry`` is a temporary of :func:`atomic_write` writing ``name``
    (in some process): a folder check must not count a peer's file being written."""
    head, _, rest = entry.partition(f".{name}.")
    return head == "" and ".tmp" in rest


def atomic_write(path: Union[str, Path], data: Union[bytes, str, None] = None, *,
                 write: Optional[Callable[[Path], object]] = None) -> Path:
    """Write ``path`` atomically and return it; its folder is created if needed.

    Give ``data`` (bytes, or text written as UTF-8; flushed to disk before the rename) or
    ``write``, a callable that writes the file it is given.
    """
    if (data is None) == (write is None):
        raise TypeError("atomic_write takes data or write=, exactly one")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _named(exc, path) from exc
    tmp = _temp_path(path)
    if tmp.is_symlink() or tmp.exists():  # a link planted at the temporary name is not followed
        tmp.unlink()
    try:
        if write is not None:
            write(tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        named = _named(exc, path)
        if named is exc:
            raise
        raise named from exc
    finally:
        if tmp.is_symlink() or tmp.exists():  # the write failed: nothing half-written stays
            tmp.unlink()
    return path


_FIX = {errno.ENOSPC: "free disk space (or write to another disk with --out) and rerun with --resume",
        errno.EFBIG: "raise the file-size limit (ulimit -f) or write to another disk, and rerun with --resume",
        errno.EDQUOT: "free space within your disk quota and rerun with --resume",
        errno.ENAMETOOLONG: "choose a shorter --out path",
        errno.EACCES: "check the folder's permissions or choose another --out",
        errno.EROFS: "choose an --out on a writable disk"}


def _named(exc: OSError, path: Path):
    """The failed write as a :class:`~neuroxai.errors.WriteError` naming the file and the fix
    (already named errors pass through)."""
    from .errors import NeuroXAIError, WriteError

    if isinstance(exc, NeuroXAIError):
        return exc
    return WriteError("cannot write the file", path=path, expected="a file written in full",
                      found=f"{type(exc).__name__}: {exc.strerror or exc}",
                      fix=_FIX.get(exc.errno, "check the disk and the folder, then rerun with --resume"))
