"""lape_hub.hub_files in process (issue 14): the upload side's folder walk and file opening,
the checks on names and checksums a server sends, the download cap, and listing and
downloading against the fake Hub (tests/hub_server.py) with the real client.

Checksums are computed here with hashlib (git blob ids as ``sha1(b"blob N\\0" + data)``),
messages written out from the rules; nothing expected is taken from the code under test.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from hub_server import ALICE, hub  # noqa: F401 - fixture
from lape_hub import hub_files as hf
from lape_hub.errors import HubError, LapeHubError
from lape_hub.hub_files import (LocalFile, RemoteFile, UnsafeFolderError, check_commit_sha,
                                check_repo_path, collect_files, download_cap_bytes,
                                open_regular, show_name)


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- printing names, redaction ----------------------------------------------------------------

def test_show_name_quotes_escapes_and_cuts():
    assert show_name("a\nb") == "'a\\nb'"
    assert show_name("x" * 98) == "'" + "x" * 98 + "'"            # 100 characters: kept
    assert show_name("x" * 99) == "'" + "x" * 95 + "...'"         # 101: cut to 100
    assert len(show_name("y" * 500)) == 100
    assert show_name("abcdefgh", limit=8) == "'abc...'"
    assert show_name(12) == "'12'"


def test_redacting_scrubs_the_token_from_lape_hub_errors_only():
    with pytest.raises(HubError) as exc:
        with hf.redacting("hf_SECRET"):
            raise HubError("server said hf_SECRET twice: hf_SECRET", 7)
    assert exc.value.args == ("server said hf_*** twice: hf_***", 7)
    with pytest.raises(HubError) as exc:
        with hf.redacting(None):
            raise HubError("no token: hf_SECRET stays")
    assert exc.value.args == ("no token: hf_SECRET stays",)
    with pytest.raises(ValueError) as exc:  # not a lape-hub error: untouched
        with hf.redacting("hf_SECRET"):
            raise ValueError("hf_SECRET")
    assert exc.value.args == ("hf_SECRET",)
    with hf.redacting("hf_SECRET"):
        pass


# -- opening files for upload -------------------------------------------------------------------

def test_open_regular_reads_a_regular_file_in_blocking_mode(tmp_path):
    (tmp_path / "f").write_bytes(b"bytes")
    with open_regular(tmp_path / "f") as f:
        assert f.read() == b"bytes" and os.get_blocking(f.fileno()) and f.mode == "rb"


def test_open_regular_refuses_links_pipes_devices_folders(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    with pytest.raises(UnsafeFolderError) as exc:
        open_regular(tmp_path / "link")
    assert str(exc.value) == f"{tmp_path / 'link'}: cannot open it for upload (a symlink): refused"
    with pytest.raises(UnsafeFolderError) as exc:
        open_regular(tmp_path / "missing")
    assert str(exc.value) == (f"{tmp_path / 'missing'}: cannot open it for upload "
                              "(No such file or directory): refused")
    os.mkfifo(tmp_path / "pipe")  # no writer: opening must not block
    with pytest.raises(UnsafeFolderError) as exc:
        open_regular(tmp_path / "pipe")
    assert str(exc.value) == f"{tmp_path / 'pipe'} is not a regular file (fifo): refused"
    with pytest.raises(UnsafeFolderError) as exc:
        open_regular(tmp_path)
    assert str(exc.value) == f"{tmp_path} is not a regular file (folder): refused"
    with pytest.raises(UnsafeFolderError) as exc:
        open_regular("/dev/null")
    assert str(exc.value) == "/dev/null is not a regular file (character device): refused"


def test_open_regular_closes_what_it_refuses(tmp_path, monkeypatch):
    closed = []
    real_close = os.close
    monkeypatch.setattr(os, "close", lambda fd: closed.append(fd) or real_close(fd))
    with pytest.raises(UnsafeFolderError):
        open_regular(tmp_path)
    assert len(closed) == 1


@pytest.mark.parametrize("fmt, name", [(stat.S_IFLNK, "symlink"), (stat.S_IFIFO, "fifo"),
                                       (stat.S_IFSOCK, "socket"), (stat.S_IFCHR, "character device"),
                                       (stat.S_IFBLK, "block device"), (stat.S_IFDIR, "folder"),
                                       (0, "special file")])
def test_kind_names_every_file_type(fmt, name):
    assert hf._kind(fmt | 0o644) == name


# -- collecting a folder --------------------------------------------------------------------------

def json_only(rel: str) -> bool:
    return rel.endswith(".json")


def test_collect_files_returns_the_allowed_regular_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "c").mkdir()
    for rel in ("a.json", "b/x.json", "b/c/y.json"):
        (tmp_path / rel).write_text(rel)
    got = collect_files(tmp_path, json_only, what="folder", prefix="runs/")
    assert sorted(got) == ["runs/a.json", "runs/b/c/y.json", "runs/b/x.json"]
    assert got["runs/b/x.json"] == LocalFile("runs/b/x.json", tmp_path / "b" / "x.json")
    assert collect_files(tmp_path / "b", json_only, what="folder") == {
        "x.json": LocalFile("x.json", tmp_path / "b" / "x.json"),
        "c/y.json": LocalFile("c/y.json", tmp_path / "b" / "c" / "y.json")}
    assert collect_files(tmp_path / "b" / "c", json_only, what="f") == {
        "y.json": LocalFile("y.json", tmp_path / "b" / "c" / "y.json")}


def test_collect_files_skips_without_complaint(tmp_path):
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "junk.bin").write_bytes(b"x")
    os.mkfifo(tmp_path / ".cache" / "pipe")
    (tmp_path / "ok.json").write_text("{}")
    (tmp_path / "note.txt").write_text("x")
    got = collect_files(tmp_path, json_only, what="folder",
                        skip=lambda rel: rel in (".cache", "note.txt"))
    assert list(got) == ["ok.json"]


def test_collect_files_refuses_one_bad_entry_in_one_line(tmp_path):
    (tmp_path / "ok.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "link.json").symlink_to(tmp_path / "ok.json")
    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="run folder")
    assert str(exc.value) == (
        f"refused to publish run folder {tmp_path}: it holds 1 entry lape-hub does not "
        "publish: 'sub/link.json' (symlink); remove it (links, devices and pipes are never "
        "followed or sent)")


def test_collect_files_names_five_bad_entries_and_counts_the_rest(tmp_path):
    (tmp_path / "a.txt").write_text("x")                         # not on the allow-list
    os.mkfifo(tmp_path / "b.json")                               # a pipe
    (tmp_path / "c.json").write_text("{}")
    os.link(tmp_path / "c.json", tmp_path / "d.json")            # hard links: both named
    (tmp_path / "e.json").symlink_to("/etc/passwd")
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "g.txt").write_text("x")
    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="folder")
    assert str(exc.value) == (
        f"refused to publish folder {tmp_path}: it holds 7 entries lape-hub does not publish: "
        "'a.txt' (not on the allow-list), 'b.json' (fifo), 'c.json' (hard link), "
        "'d.json' (hard link), 'e.json' (symlink) and 2 more; remove them (links, devices "
        "and pipes are never followed or sent)")


def test_collect_files_exactly_five_has_no_more(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text("x")
    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="folder")
    assert "(not on the allow-list); remove them" in str(exc.value)
    assert "more" not in str(exc.value) and "holds 5 entries" in str(exc.value)
    (tmp_path / "5.txt").write_text("x")
    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="folder")
    assert "holds 6 entries" in str(exc.value)
    assert "'4.txt' (not on the allow-list) and 1 more; remove them" in str(exc.value)


def test_collect_files_checks_content_and_reports_paths_without_prefix(tmp_path):
    (tmp_path / "good.json").write_text("{}")
    (tmp_path / "bad.json").write_text("[]")
    seen = []

    def check(f: LocalFile) -> str | None:
        seen.append(f.path)
        return None if Path(f.source).read_text() == "{}" else "not an object"

    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="folder", prefix="p/", check=check)
    assert "it holds 1 entry lape-hub does not publish: 'bad.json' (not an object); remove it" \
        in str(exc.value)
    assert sorted(seen) == ["p/bad.json", "p/good.json"]
    (tmp_path / "bad.json").write_text("{}")
    assert sorted(collect_files(tmp_path, json_only, what="folder", prefix="p/", check=check)) \
        == ["p/bad.json", "p/good.json"]


def test_collect_files_reports_unreadable_entries(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "x.json").write_text("{}")
    real = os.scandir

    def scandir(p):
        if Path(p) == tmp_path / "sub":
            raise PermissionError(13, "Permission denied")
        return real(p)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="folder")
    assert "holds 1 entry lape-hub does not publish: 'sub/' (unreadable: Permission denied)" \
        in str(exc.value)
    monkeypatch.setattr(os, "scandir", lambda p: (_ for _ in ()).throw(PermissionError(13, "Nope")))
    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="folder")
    assert "'.' (unreadable: Nope)" in str(exc.value)


    class Vanishing:  # an entry removed between listing and stat
        name, path = "gone.json", str(tmp_path / "gone.json")

        def stat(self, follow_symlinks=True):
            raise FileNotFoundError(2, "No such file or directory")

    class Pipe:
        name, path = "p.json", str(tmp_path / "p.json")

        def stat(self, follow_symlinks=True):
            return os.stat_result((stat.S_IFIFO | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    monkeypatch.setattr(os, "scandir", lambda p: iter([Vanishing(), Pipe()]))
    with pytest.raises(UnsafeFolderError) as exc:
        collect_files(tmp_path, json_only, what="folder")
    assert "holds 2 entries lape-hub does not publish: 'gone.json' (unreadable: No such file " \
        "or directory), 'p.json' (fifo); remove them" in str(exc.value)


# -- local and remote files ---------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"x", b"hello\n" * 1000, bytes(range(256)) * 4097])
def test_local_file_checksums_from_bytes_and_from_disk(tmp_path, data):
    (tmp_path / "f").write_bytes(data)
    for source in (data, tmp_path / "f"):
        f = LocalFile("a/f", source)
        assert (f.data_size, f.sha256, f.git_oid) == (len(data), sha256(data), blob_id(data))
        with f.open() as fh:
            assert fh.read() == data


def test_local_file_on_disk_is_opened_without_following_links(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    for what in ("data_size", "sha256", "open"):
        with pytest.raises(UnsafeFolderError, match="a symlink"):
            v = getattr(LocalFile("l", tmp_path / "l"), what)
            v() if callable(v) else None
    assert isinstance(LocalFile("b", b"x").open(), io.BytesIO)


def test_remote_file_same_as():
    data = b"payload"
    local = LocalFile("x", data)
    assert RemoteFile("x", 7, blob_id(data), None).same_as(local)
    assert not RemoteFile("x", 7, blob_id(b"other!!"), None).same_as(local)
    # in LFS: size and sha256 decide, the oid is not looked at
    assert RemoteFile("x", 7, "0" * 40, sha256(data)).same_as(local)
    assert not RemoteFile("x", 8, "0" * 40, sha256(data)).same_as(local)
    assert not RemoteFile("x", 7, blob_id(data), sha256(b"other!!")).same_as(local)


def test_remote_file_check_accepts_a_good_entry():
    good = RemoteFile("a/b.parquet", 0, "a" * 40, "b" * 64)
    assert good.check("server") is good
    plain = RemoteFile("a/b.json", 12, "0123456789abcdef0123456789abcdef01234567", None)
    assert plain.check("server") is plain


@pytest.mark.parametrize("size, oid, sha, why", [
    (-1, "a" * 40, None, "a bad size '-1'"),
    (True, "a" * 40, None, "a bad size 'True'"),
    ("3", "a" * 40, None, "a bad size '3'"),
    (1.0, "a" * 40, None, "a bad size '1.0'"),
    (1, "A" * 40, None, "a bad git oid"),
    (1, "a" * 39, None, "a bad git oid"),
    (1, "a" * 40 + "\n", None, "a bad git oid"),
    (1, None, None, "a bad git oid"),
    (1, "a" * 40, "b" * 63, "a bad sha256"),
    (1, "a" * 40, "B" * 64, "a bad sha256"),
    (1, "a" * 40, 5, "a bad sha256"),
])
def test_remote_file_check_refuses_malformed_entries(size, oid, sha, why):
    with pytest.raises(HubError) as exc:
        RemoteFile("dir/f.json", size, oid, sha).check("dataset repo o/r")
    assert str(exc.value) == f"dataset repo o/r lists 'dir/f.json' with {why}: refused"


def test_remote_file_check_refuses_an_unsafe_path():
    with pytest.raises(HubError, match=r"^srv sent an unsafe file name '\.\./x' \(a '\.\.' part\): refused$"):
        RemoteFile("../x", 1, "a" * 40, None).check("srv")


# -- names a server sends ------------------------------------------------------------------------

@pytest.mark.parametrize("path, why", [
    ("", "empty or not a string"), (None, "empty or not a string"), (5, "empty or not a string"),
    ("a" * 1001, "too long"), ("/etc/passwd", "an absolute path"), ("a\\b", "a backslash"),
    ("C:x", "a colon"), ("a\nb", "a control character"), ("a\x1fb", "a control character"),
    ("a\x7fb", "a control character"), ("a/../b", "a '..' part"), ("..", "a '..' part"),
    ("a//b", "an empty or '.' part"), ("a/./b", "an empty or '.' part"), ("a/", "an empty or '.' part"),
    (".", "an empty or '.' part"),
])
def test_check_repo_path_refuses(path, why):
    with pytest.raises(HubError) as exc:
        check_repo_path(path, "dataset repo o/r")
    assert str(exc.value) == (f"dataset repo o/r sent an unsafe file name {show_name(str(path))} "
                              f"({why}): refused")


@pytest.mark.parametrize("path", ["a", "a/b.json", "a" * 1000, "x/.hidden", "a/...", "é/ü ~.json",
                                  "a\x20b", "model=gemma/lang=mlt_Latn/x.parquet"])
def test_check_repo_path_accepts(path):
    assert check_repo_path(path, "srv") == path


@pytest.mark.parametrize("sha", ["a" * 39, "a" * 41, "A" * 40, "g" * 40, "a" * 40 + "\n", None, 1])
def test_check_commit_sha_refuses(sha):
    with pytest.raises(HubError) as exc:
        check_commit_sha(sha, "the cache")
    assert str(exc.value) == (f"the cache gave a malformed commit id {show_name(str(sha), 60)} "
                              "(not 40 hex digits): refused")


def test_check_commit_sha_accepts_and_cuts_long_ones():
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert check_commit_sha(sha, "srv") == sha
    with pytest.raises(HubError) as exc:
        check_commit_sha("f" * 200, "srv")
    assert f"commit id '{'f' * 55}...' (not 40" in str(exc.value)


# -- the download cap ------------------------------------------------------------------------------

def test_download_cap_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LAPE_HUB_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", "1.5")
    assert download_cap_bytes() == 1572864
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", "0.000001")
    assert download_cap_bytes() == 1  # 1.048576 bytes
    (tmp_path / "c.toml").write_text("[hub]\nmax_download_mb = 3\n")
    monkeypatch.setenv("LAPE_HUB_CONFIG", str(tmp_path / "c.toml"))
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", "2")
    assert download_cap_bytes() == 2 * 1048576  # the environment wins over the file


@pytest.mark.parametrize("bad", ["0", "-1", "inf", "nan", "abc", "-inf", "1e400"])
def test_download_cap_refuses_a_bad_environment(monkeypatch, bad):
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", bad)
    with pytest.raises(HubError) as exc:
        download_cap_bytes()
    assert str(exc.value) == f"$LAPE_HUB_MAX_DOWNLOAD_MB must be a positive number of MiB, not '{bad}'"


def test_download_cap_names_a_long_bad_value_shortened(monkeypatch):
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", "7" * 30 + "x" * 30)
    with pytest.raises(HubError) as exc:
        download_cap_bytes()
    assert str(exc.value) == ("$LAPE_HUB_MAX_DOWNLOAD_MB must be a positive number of MiB, not "
                              "'" + "7" * 30 + "xxxxx...'")


def test_download_cap_from_the_config_file_else_2048(monkeypatch, tmp_path):
    monkeypatch.delenv("LAPE_HUB_MAX_DOWNLOAD_MB", raising=False)
    monkeypatch.setenv("LAPE_HUB_CONFIG", str(tmp_path / "c.toml"))
    assert download_cap_bytes() == 2048 * 1048576  # no file
    (tmp_path / "c.toml").write_text("[hub]\nrepo = \"o/r\"\n")
    assert download_cap_bytes() == 2048 * 1048576  # no key
    (tmp_path / "c.toml").write_text("[hub]\nmax_download_mb = 0.5\n")
    assert download_cap_bytes() == 524288
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", "")  # empty: as unset
    assert download_cap_bytes() == 524288


# -- listing and downloading against the fake Hub ---------------------------------------------------

REPO = "alice/files"
FILES = {"README.md": b"# card\n", "neurons/model=m/x.json": b'{"a": 1}',
         "neurons/model=m/y.parquet": b"PAR1" + bytes(300) + b"PAR1"}


@pytest.fixture
def repo(hub):
    """A dataset repo holding FILES (the .parquet in LFS); (api, head commit sha)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.url, token=ALICE)
    api.create_repo(REPO, repo_type="dataset")
    info = api.create_commit(REPO, repo_type="dataset", commit_message="files",
                             operations=[CommitOperationAdd(p, d) for p, d in FILES.items()])
    return api, info.oid


def test_list_repo_files(repo, hub):
    api, head = repo
    got = hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)
    assert set(got) == {*FILES, ".gitattributes"}
    assert got["neurons/model=m/x.json"] == RemoteFile("neurons/model=m/x.json", 8,
                                                       blob_id(FILES["neurons/model=m/x.json"]), None)
    par = FILES["neurons/model=m/y.parquet"]
    assert got["neurons/model=m/y.parquet"].sha256 == sha256(par)
    assert got["neurons/model=m/y.parquet"].size == len(par)


def test_list_repo_files_refuses_a_hostile_listing_without_the_token(repo, hub):
    api, head = repo
    hub.tree_hook = lambda items: items + [{"type": "file", "path": f"../{ALICE}", "size": 1,
                                            "oid": "a" * 40}]
    with pytest.raises(HubError) as exc:
        hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)
    assert str(exc.value) == (f"dataset repo {REPO} sent an unsafe file name '../hf_***' "
                              "(a '..' part): refused")
    hub.tree_hook = lambda items: items + [{"type": "directory", "path": "a/../b", "size": 0,
                                            "oid": "a" * 40}]
    with pytest.raises(HubError, match=r"unsafe file name 'a/\.\./b'"):
        hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)
    hub.tree_hook = lambda items: [dict(i, size=-5) if i["type"] == "file" else i for i in items]
    with pytest.raises(HubError, match="with a bad size '-5': refused"):
        hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)


def test_list_repo_files_of_a_missing_repo_is_one_hub_error(repo, hub):
    api, head = repo
    with pytest.raises(HubError) as exc:
        hf.list_repo_files(api, "alice/none", "dataset", head, token=ALICE)
    assert "alice/none" in str(exc.value) and ALICE not in str(exc.value)


def test_download_checks_size_and_checksum(repo, hub, tmp_path):
    api, head = repo
    listing = hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)
    for path, data in FILES.items():
        got = hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path / "d",
                                      token=ALICE, expected=listing[path])
        assert got == tmp_path / "d" / Path(*path.split("/")) and got.read_bytes() == data
    # without a listing entry: the bytes as served
    got = hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path / "e",
                                  token=ALICE)
    assert got.read_bytes() == FILES["README.md"]
    assert not [p for p in (tmp_path / "d").rglob("*") if p.name.startswith(".tmp")]


@pytest.mark.parametrize("path", ["neurons/model=m/x.json", "neurons/model=m/y.parquet"])
def test_download_of_other_bytes_of_the_same_size_is_not_kept(repo, hub, tmp_path, path):
    api, head = repo
    expected = hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)[path]
    hub.resolve_hook = lambda p, data: bytes(len(data)) if p == path else data
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                expected=expected)
    assert str(exc.value) == (f"{show_name(path)} from dataset repo {REPO}@{head[:12]} does not "
                              "match the checksum the Hub lists: not kept, try again")
    assert not (tmp_path / "neurons" / "model=m").exists() or \
        not list((tmp_path / "neurons" / "model=m").iterdir())


def test_download_shorter_than_listed_is_not_kept(repo, hub, tmp_path):
    api, head = repo
    path = "neurons/model=m/x.json"
    expected = hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)[path]
    hub.resolve_hook = lambda p, data: data[:-1]
    with pytest.raises(HubError, match="does not match the checksum"):
        hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                expected=expected)
    # a listing that says one byte less: the sha1 covers the size, so it cannot match either
    hub.resolve_hook = None
    short = RemoteFile(path, expected.size - 1, blob_id(FILES[path][:-1]), None)
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                expected=short)
    assert str(exc.value) == (f"{show_name(path)} from dataset repo {REPO} is larger than the "
                              f"{short.size} bytes its listing gives: stopped, nothing kept")
    assert not (tmp_path / "neurons" / "model=m" / "x.json").exists()


def test_download_cap(repo, hub, tmp_path):
    api, head = repo
    path = "neurons/model=m/y.parquet"
    expected = hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)[path]
    n = expected.size
    hint = ("raise it with $LAPE_HUB_MAX_DOWNLOAD_MB or [hub] max_download_mb in the config "
            "file ($LAPE_HUB_CONFIG)")
    with pytest.raises(HubError) as exc:   # the listing says too big: nothing is requested
        hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                expected=expected, max_bytes=n - 1)
    assert str(exc.value) == (f"{show_name(path)} in dataset repo {REPO} is 0.0 MiB, over the "
                              f"download cap of 0.0 MiB: not downloaded; {hint}")
    with pytest.raises(HubError) as exc:   # no listing: stopped while streaming
        hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                max_bytes=n - 1)
    assert str(exc.value) == (f"{show_name(path)} from dataset repo {REPO} is larger than the "
                              f"download cap of 0.0 MiB: stopped, nothing kept; {hint}")
    # exactly at the cap: kept
    got = hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                  expected=expected, max_bytes=n)
    assert got.read_bytes() == FILES[path]
    got.unlink()
    got = hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                  max_bytes=n)
    assert got.read_bytes() == FILES[path]


def test_download_cap_in_mib(repo, hub, tmp_path):
    api, head = repo
    hint = ("raise it with $LAPE_HUB_MAX_DOWNLOAD_MB or [hub] max_download_mb in the config "
            "file ($LAPE_HUB_CONFIG)")
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path, token=ALICE,
                                expected=RemoteFile("README.md", 3 * 2**20, "a" * 40, None),
                                max_bytes=2**20 + 2**19)
    assert str(exc.value) == (f"'README.md' in dataset repo {REPO} is 3.0 MiB, over the "
                              f"download cap of 1.5 MiB: not downloaded; {hint}")
    hub.resolve_hook = lambda p, data: b"x" * (2**20 + 1)
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path, token=ALICE,
                                max_bytes=2**20)
    assert str(exc.value) == (f"'README.md' from dataset repo {REPO} is larger than the "
                              f"download cap of 1.0 MiB: stopped, nothing kept; {hint}")
    assert not (tmp_path / "README.md").exists()


def test_download_reads_the_pinned_commit_not_the_head(repo, hub, tmp_path):
    api, first = repo
    api.upload_file(path_or_fileobj=b"# changed\n", path_in_repo="README.md", repo_id=REPO,
                    repo_type="dataset")
    got = hf.download_remote_file(api, REPO, "dataset", "README.md", first, tmp_path, token=ALICE)
    assert got.read_bytes() == FILES["README.md"]


def test_download_a_name_with_spaces_keeps_its_folders(repo, hub, tmp_path):
    api, head = repo
    path = "docs and notes/read me.md"
    api.upload_file(path_or_fileobj=b"spaced", path_in_repo=path, repo_id=REPO, repo_type="dataset")
    head = api.dataset_info(REPO).sha
    got = hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE)
    assert got == tmp_path / "docs and notes" / "read me.md" and got.read_bytes() == b"spaced"


def test_download_cap_default_from_the_environment(repo, hub, tmp_path, monkeypatch):
    api, head = repo
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", str(100 / 2**20))  # 100 bytes
    with pytest.raises(HubError, match="over the download cap of 0.0 MiB"):
        hf.download_remote_file(api, REPO, "dataset", "neurons/model=m/y.parquet", head,
                                tmp_path, token=ALICE,
                                expected=RemoteFile("neurons/model=m/y.parquet", 308, "a" * 40, None))
    got = hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path, token=ALICE)
    assert got.read_bytes() == FILES["README.md"]


def test_download_refuses_bad_names_and_linked_folders(repo, hub, tmp_path):
    api, head = repo
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "README.md", "main", tmp_path, token=ALICE)
    assert str(exc.value) == (f"dataset repo {REPO} gave a malformed commit id 'main' (not 40 "
                              "hex digits): refused")
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "../README.md", head, tmp_path, token=ALICE)
    assert str(exc.value) == (f"dataset repo {REPO} sent an unsafe file name '../README.md' "
                              "(a '..' part): refused")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    (dest / "neurons").mkdir(parents=True)
    (dest / "neurons" / "model=m").symlink_to(outside)
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "neurons/model=m/x.json", head, dest,
                                token=ALICE)
    assert str(exc.value) == (f"{dest / 'neurons' / 'model=m'} is a link or not a folder: "
                              "refusing to download 'neurons/model=m/x.json' through it")
    assert list(outside.iterdir()) == []
    (dest / "neurons" / "model=m").unlink()
    (dest / "neurons" / "model=m").write_text("a file")
    with pytest.raises(HubError, match="is a link or not a folder"):
        hf.download_remote_file(api, REPO, "dataset", "neurons/model=m/x.json", head, dest,
                                token=ALICE)


def test_download_replaces_a_planted_link_instead_of_writing_through_it(repo, hub, tmp_path):
    api, head = repo
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "README.md").symlink_to(victim)
    got = hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path / "d",
                                  token=ALICE)
    assert not got.is_symlink() and got.read_bytes() == FILES["README.md"]
    assert victim.read_text() == "precious"


def test_download_errors_are_one_redacted_hub_error(repo, hub, tmp_path):
    api, head = repo
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "missing.json", head, tmp_path, token=ALICE)
    assert "missing.json" in str(exc.value) and ALICE not in str(exc.value)
    hub.echo = True  # the server repeats the Authorization header in its errors
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "missing.json", head, tmp_path, token=ALICE)
    assert ALICE not in str(exc.value)
    hub.echo = False
    hub.resolve_hook = lambda p, data: data + ALICE.encode()  # longer than listed
    expected = hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)["README.md"]
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path, token=ALICE,
                                expected=expected)
    assert "is larger than the 7 bytes its listing gives" in str(exc.value)


def test_download_retries_a_transient_error(repo, hub, tmp_path):
    api, head = repo
    hub.fail("GET", r"/resolve/", 503, times=1)
    got = hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path, token=ALICE)
    assert got.read_bytes() == FILES["README.md"]


def test_download_sends_the_token_only_when_given(repo, hub, tmp_path):
    """token=None: no Authorization at all, not even HF_TOKEN's (the hub fixture sets it)."""
    api, head = repo
    hub.received.clear()
    hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path, token=ALICE)
    assert any(ALICE.encode() in r for r in hub.received)
    hub.received.clear()
    got = hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path / "n",
                                  token=None)
    assert got.read_bytes() == FILES["README.md"]
    assert hub.received and not any(ALICE.encode() in r for r in hub.received)
    assert not any(b"authorization" in r.lower() for r in hub.received)


# -- the HTTP stream, with recording sessions -----------------------------------------------------

class Response:
    def __init__(self, status=200, body=b"abc"):
        self.status_code, self.body, self.calls = status, body, []

    def read(self):
        self.calls.append("read")

    def iter_bytes(self, n):
        self.calls.append(("iter_bytes", n))
        return iter([self.body])

    def iter_content(self, n):
        self.calls.append(("iter_content", n))
        return iter([self.body])

    def close(self):
        self.calls.append("close")


class HttpxSession:
    """Like httpx.Client: ``stream(...)`` is a context manager giving the response."""

    def __init__(self, response):
        self.response, self.calls = response, []

    def stream(self, method, url, **kw):
        self.calls.append((method, url, kw))
        session = self

        class CM:
            def __enter__(self):
                return session.response

            def __exit__(self, *exc):
                session.calls.append(("exit", exc))

        return CM()


class RequestsSession:
    """Like requests.Session: ``get(..., stream=True)``, no ``stream`` method."""

    def __init__(self, response):
        self.response, self.calls = response, []

    def get(self, url, **kw):
        self.calls.append((url, kw))
        return self.response


@pytest.fixture
def session(monkeypatch):
    """``session(kind, response)`` installs a recording session; hf_raise_for_status raises
    for a status >= 400 and records the responses it saw."""
    import huggingface_hub.utils as hu

    raised = []

    def raise_for_status(r):
        raised.append(r.status_code)
        if r.status_code >= 400:
            raise HubError(f"status {r.status_code}")

    monkeypatch.setattr(hu, "hf_raise_for_status", raise_for_status)

    def make(kind, response):
        s = kind(response)
        monkeypatch.setattr(hu, "get_session", lambda: s)
        return s

    make.raised = raised
    return make


def test_stream_over_httpx(session, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 7.5)
    s = session(HttpxSession, Response())
    st = hf._stream("http://hub/x", "hf_tok")
    with st as chunks:
        assert list(chunks) == [b"abc"]
    (method, url, kw), (exit_, exc) = s.calls
    assert (method, url, exit_, exc) == ("GET", "http://hub/x", "exit", (None, None, None))
    assert kw["follow_redirects"] is True and kw["timeout"] == 7.5
    assert kw["headers"]["authorization"] == "Bearer hf_tok"
    assert kw["headers"]["user-agent"].startswith("lape-hub/")
    assert s.response.calls == [("iter_bytes", 1 << 20)] and session.raised == [200]


def test_stream_default_timeout_and_no_token(session, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT")
    s = session(HttpxSession, Response())
    with hf._stream("http://hub/x", None):
        pass
    kw = s.calls[0][2]
    assert kw["timeout"] == 10 and "authorization" not in kw["headers"]


@pytest.mark.parametrize("status", [400, 404, 500])
def test_stream_reads_an_error_body_before_raising(session, status):
    s = session(HttpxSession, Response(status))
    with pytest.raises(HubError, match=f"status {status}"):
        with hf._stream("http://hub/x", "t"):
            pass
    assert s.response.calls == ["read"]  # the body, so the error can quote the server
    # `with` calls no __exit__ when __enter__ raises: the stream must be closed all the same
    assert [c[0] for c in s.calls[1:]] == ["exit"] and s.calls[1][1][0] is HubError


def test_stream_over_requests(session, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 3)
    s = session(RequestsSession, Response())
    with hf._stream("http://hub/y", "hf_tok") as chunks:
        assert list(chunks) == [b"abc"]
    ((url, kw),) = s.calls
    assert url == "http://hub/y" and kw["stream"] is True and kw["allow_redirects"] is True
    assert kw["timeout"] == 3 and kw["headers"]["authorization"] == "Bearer hf_tok"
    assert s.response.calls == [("iter_content", 1 << 20), "close"]
    s = session(RequestsSession, Response(403))
    with pytest.raises(HubError, match="status 403"):
        with hf._stream("http://hub/y", "t"):
            pass
    assert s.response.calls == ["close"]  # closed although __exit__ never ran


# -- more on listing and downloading: errors, pinned revisions, hostile names ----------------------

def test_listing_and_download_errors_name_the_repo_and_the_action(repo, hub, tmp_path):
    from huggingface_hub import HfApi

    api, head = repo
    bad = HfApi(endpoint=hub.url, token="hf_bad")
    with pytest.raises(HubError) as exc:
        hf.list_repo_files(bad, REPO, "dataset", head, token="hf_bad")
    assert str(exc.value) == (f"the Hub rejected the token (401 invalid credentials) while "
                              f"listing dataset repo {REPO}: set HF_TOKEN to a valid token or "
                              "run `hf auth login`")
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(bad, REPO, "dataset", "README.md", head, tmp_path, token="hf_bad")
    assert str(exc.value) == (f"the Hub rejected the token (401 invalid credentials) while "
                              f"downloading 'README.md' from dataset repo {REPO}: set HF_TOKEN "
                              "to a valid token or run `hf auth login`")
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "missing.json", head, tmp_path, token=ALICE)
    assert str(exc.value) == (f"file not found in dataset repo {REPO} (404) while "
                              "downloading 'missing.json' from it")


def test_server_messages_in_errors_are_redacted(repo, hub, tmp_path):
    api, head = repo
    hub.echo = True  # the server repeats the Authorization header it received
    hub.fail("GET", r"/tree/", 400)
    with pytest.raises(HubError) as exc:
        hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)
    assert str(exc.value) == (f"the Hub refused listing dataset repo {REPO} (HTTP 400): "
                              "injected 400 (request had Authorization: Bearer hf_***)")
    hub.fail("GET", r"/resolve/", 400)
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", "README.md", head, tmp_path, token=ALICE)
    assert str(exc.value) == (f"the Hub refused downloading 'README.md' from dataset repo {REPO} "
                              "(HTTP 400): injected 400 (request had Authorization: Bearer hf_***)")


def test_a_file_named_like_the_token_is_redacted_in_checksum_errors(repo, hub, tmp_path):
    """Paths come from the server's listing: one may repeat the token; lape-hub's own
    messages that name the path are scrubbed too."""
    api, head = repo
    path = f"x-{ALICE}.json"
    api.upload_file(path_or_fileobj=b"{}", path_in_repo=path, repo_id=REPO, repo_type="dataset")
    head = api.dataset_info(REPO).sha
    expected = hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)[path]
    hub.resolve_hook = lambda p, data: b"[]"
    with pytest.raises(HubError) as exc:
        hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                expected=expected)
    assert str(exc.value) == (f"'x-hf_***.json' from dataset repo {REPO}@{head[:12]} does not "
                              "match the checksum the Hub lists: not kept, try again")


def test_listing_at_a_pinned_commit(repo, hub):
    api, first = repo
    api.upload_file(path_or_fileobj=b"# a longer card now\n", path_in_repo="README.md",
                    repo_id=REPO, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"new", path_in_repo="new.txt", repo_id=REPO,
                    repo_type="dataset")
    old = hf.list_repo_files(api, REPO, "dataset", first, token=ALICE)
    assert "new.txt" not in old
    assert old["README.md"] == RemoteFile("README.md", 7, blob_id(FILES["README.md"]), None)


def test_a_hostile_folder_name_in_the_listing_names_the_repo(repo, hub):
    api, head = repo
    hub.tree_hook = lambda items: items + [{"type": "directory", "path": "a/../b", "size": 0,
                                            "oid": "a" * 40}]
    with pytest.raises(HubError) as exc:
        hf.list_repo_files(api, REPO, "dataset", head, token=ALICE)
    assert str(exc.value) == (f"dataset repo {REPO} sent an unsafe file name 'a/../b' "
                              "(a '..' part): refused")


def test_more_than_listed_but_within_the_cap_names_the_listing(repo, hub, tmp_path):
    api, head = repo
    path = "neurons/model=m/y.parquet"
    n = len(FILES[path])
    with pytest.raises(HubError) as exc:   # served n bytes, listed 100, cap exactly n
        hf.download_remote_file(api, REPO, "dataset", path, head, tmp_path, token=ALICE,
                                expected=RemoteFile(path, 100, "a" * 40, None), max_bytes=n)
    assert str(exc.value) == (f"'{path}' from dataset repo {REPO} is larger than the 100 bytes "
                              "its listing gives: stopped, nothing kept")


def test_remote_file_check_shortens_a_long_size():
    with pytest.raises(HubError) as exc:
        RemoteFile("f", "9" * 60, "a" * 40, None).check("srv")
    assert str(exc.value) == "srv lists 'f' with a bad size '" + "9" * 35 + "...': refused"
