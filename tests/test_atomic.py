"""The one atomic writer: the old file or the new one, never half of one, and no temporary file
left behind; every writer of the package goes through it."""
from __future__ import annotations

import ast
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import neuroxai
from neuroxai.atomic import _temp_path, atomic_write, is_temporary_of


def test_bytes_and_text_replace_the_file_and_leave_no_temporary(tmp_path):
    p = tmp_path / "sub" / "a.json"
    assert atomic_write(p, '{"x": "é"}') == p
    assert p.read_bytes() == '{"x": "é"}'.encode("utf-8")
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_half(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"old")

    def half(tmp: Path):
        tmp.write_bytes(b"new but cut")
        raise KeyboardInterrupt  # Ctrl-C in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, write=half)
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.pt"]


def test_writers_that_choose_by_extension_write_the_temporary_itself(tmp_path):
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    atomic_write(tmp_path / "x.npy", write=lambda t: np.save(t, arr))  # np.save appends .npy if missing
    atomic_write(tmp_path / "x.npz", write=lambda t: np.savez_compressed(t, a=arr))
    atomic_write(tmp_path / "m.nii.gz", write=lambda t: nib.save(nib.Nifti1Image(arr[..., None], np.eye(4)), t))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.nii.gz", "x.npy", "x.npz"]
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), arr)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npz")["a"], arr)
    assert gzip.open(tmp_path / "m.nii.gz").read(4)  # gzip, as the name says
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj)[..., 0], arr)


def test_exactly_one_of_data_and_write():
    with pytest.raises(TypeError):
        atomic_write("x", b"a", write=lambda t: None)
    with pytest.raises(TypeError):
        atomic_write("x")


def test_no_other_module_renames_files_into_place():
    root = Path(neuroxai.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if path.name == "atomic.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            # os.replace/os.rename(a, b), or Path.replace/rename(target): one argument, no keywords
            # (str.replace takes two, DataFrame.rename keywords)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("replace", "rename"):
                base = node.func.value
                if (isinstance(base, ast.Name) and base.id == "os") or (len(node.args) == 1 and not node.keywords):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


def test_a_peers_temporary_is_recognised_as_such(tmp_path):
    tmp = _temp_path(tmp_path / ".neuroxai").name
    assert is_temporary_of(tmp, ".neuroxai") and is_temporary_of(".x.nii.gz.7.tmp.nii.gz", "x.nii.gz")
    assert not is_temporary_of(".neuroxai", ".neuroxai") and not is_temporary_of("notes.txt", ".neuroxai")
    assert not is_temporary_of("..neuroxai.old", ".neuroxai")
