"""Atomic writes: all or nothing, with ordinary permissions."""
import errno
import os
import stat

import pytest

from end2you_visual.files import atomic_file, atomic_path, atomic_write_text


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "sub" / "a.csv", "time,x\n0,1\n")
        (tmp_path / "plain.csv").write_text("x")
    finally:
        os.umask(old)
    written = stat.S_IMODE((tmp_path / "sub" / "a.csv").stat().st_mode)
    assert written == stat.S_IMODE((tmp_path / "plain.csv").stat().st_mode) == 0o644
    assert (tmp_path / "sub" / "a.csv").read_text() == "time,x\n0,1\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "chain.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.json"]


def test_atomic_path_writes_a_named_file_beside_the_target(tmp_path):
    import h5py

    target = tmp_path / "sub" / "out.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.h5.")
        assert tmp.name.endswith(".tmp") and tmp.stat().st_size == 0
        assert not target.exists()
        with h5py.File(tmp, "w") as h5:  # a writer that opens the file by its name
            h5["x"] = [1, 2, 3]
    with h5py.File(target) as h5:
        assert h5["x"][:].tolist() == [1, 2, 3]
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.h5"]


def test_atomic_path_on_an_error_keeps_the_old_file_and_names_the_target(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as err:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(target))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]
