"""signature.py and digest.py against values computed here (issue 14 mutation testing)."""
from __future__ import annotations

import hashlib

import pytest

import lape_hub.digest as digest
from lape_hub import __version__
from lape_hub.digest import artifact_sha256, file_sha256
from lape_hub.signature import human_count, signature


@pytest.mark.parametrize("n,want", [(0, "0"), (999, "999"), (1000, "1k"), (1500, "1.5k"),
                                    (1_000_000, "1M"), (1_234_567, "1.23M"),
                                    (1_000_000_000, "1B"), (25_600_000_000, "25.6B"),
                                    # rounding up to 1000 moves to the next unit, never "1e+03k"
                                    (999_499, "999k"), (999_500, "1M"), (999_999, "1M"),
                                    (999_499_999, "999M"), (999_500_000, "1B"),
                                    (999_499_999_999, "999B"), (999_500_000_000, "1000B"),
                                    (12_345_678_901_234, "12346B")])
def test_human_count(n, want):
    assert human_count(n) == want


def test_signature_order_and_omissions():
    v = f"v:{__version__}"
    assert signature("m") == f"model:m|{v}"
    assert signature("m", "") == f"model:m|{v}"
    assert signature("m", "rev") == f"model:m@rev|{v}"
    got = signature("m", "r", tokens=2500, corpus="c", selection="s", lang="l", refset="p",
                    seed=3, zeta="z", alpha=1, dtype="bf16", steps=0, bos=None)
    assert got == f"model:m@r|refset:p|lang:l|sel:s|corpus:c|tok:2.5k|dtype:bf16|steps:0|" \
                  f"seed:3|alpha:1|zeta:z|{v}"
    assert signature("m", tokens=0) == f"model:m|tok:0|{v}"
    assert signature("m", method="x", comp="y", lr=0.1) == f"model:m|method:x|comp:y|lr:0.1|{v}"


def test_file_and_artifact_digests(tmp_path, monkeypatch):
    monkeypatch.setattr(digest, "CHUNK", 3)  # several chunks
    data = b"abcdefgh" * 5
    (tmp_path / "a.bin").write_bytes(data)
    assert file_sha256(tmp_path / "a.bin") == hashlib.sha256(data).hexdigest()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_bytes(b"")
    (tmp_path / ".tmp-x").write_bytes(b"half")
    (tmp_path / "sub" / ".tmp-y").write_bytes(b"half")
    lines = (f"a.bin\0{hashlib.sha256(data).hexdigest()}\n"
             f"sub/b.txt\0{hashlib.sha256(b'').hexdigest()}\n")
    want = hashlib.sha256(lines.encode()).hexdigest()
    assert artifact_sha256(tmp_path) == want
    assert artifact_sha256(str(tmp_path)) == want
    (tmp_path / "c").write_bytes(b"")  # a new file changes it
    assert artifact_sha256(tmp_path) != want
    assert artifact_sha256(tmp_path / "sub" / "missing") == hashlib.sha256().hexdigest()
