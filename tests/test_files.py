"""Atomic writes: all or nothing, with ordinary permissions."""
import os
import stat

import pytest

from end2you_visual.files import atomic_file, atomic_write_text


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
