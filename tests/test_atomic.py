"""Atomic writes: the old file or the new one, never half of one; data reaches the disk
(fsync) before the rename makes it visible; temp files never outlive a failure."""
import os

import pytest

from lape_hub import atomic
from lape_hub.atomic import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_text


def test_fsync_happens_on_the_temp_file_before_the_rename(tmp_path, monkeypatch):
    """The second line of defence after the rename: without fsync a power cut can leave an
    empty file under the final name. Record the order of fsync and replace."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"payload")
    assert [e[0] for e in events] == ["fsync", "replace"]
    tmp_name = events[1][1]
    assert events[0][1] == tmp_name and events[1][2] == str(target)
    assert target.read_bytes() == b"payload"


def test_fsync_can_be_skipped_for_caches(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append(fd))
    with atomic_path(tmp_path / "c.bin", fsync=False) as tmp:
        tmp.write_bytes(b"c")
    assert calls == [] and (tmp_path / "c.bin").read_bytes() == b"c"


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_temp_file_sits_beside_the_target_with_its_suffix(tmp_path):
    """Same folder (so the rename is atomic on one filesystem), same suffix (so writers
    that pick a format by extension, e.g. pyarrow, see the right one)."""
    with atomic_path(tmp_path / "sub" / "t.parquet") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.suffix == ".parquet"
        assert tmp.name.startswith(".tmp-")
        tmp.write_text("x")
    assert (tmp_path / "sub" / "t.parquet").read_text() == "x"


def test_write_text_is_utf8(tmp_path):
    atomic_write_text(tmp_path / "u.txt", "mlt: ħ ġ ż")
    assert (tmp_path / "u.txt").read_bytes() == "mlt: ħ ġ ż".encode()


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)
