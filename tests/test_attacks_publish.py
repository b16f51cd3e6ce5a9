"""Attacks on publishing and the remote catalog (issue 9), and on token redaction (issue 14).

Each case runs a lape-hub command (in this process, so that it talks to the fake Hub of
``hub_server.py``; a few also through the real console entry point) and asserts exit 2,
exactly one line on stderr, no traceback, and that the catalog (and the fake Hub) did not
change. A secret is a fake token file next to the folders; tests scan every byte the fake
Hub received (``FakeHub.received_bytes``, base64 payloads decoded) and every staged file
for it.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import stat
import subprocess
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from attack_helpers import assert_one_line_error, run_cli, tree_hashes
from hub_server import ALICE, build_catalog, hub  # noqa: F401 - fixture
from test_publisher import make_adapter

from lape_hub.publisher import publish_adapter, publish_catalog
from lape_hub.remote import hub_cache_dir, remote_catalog

REPO = "alice/lape-catalog"
NEURONS = "neurons/model=gemma-3-270m/refset=paper-12/selection=top0.05-f0.95-b0.95/data.parquet"


# -- helpers --------------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    """``lape-hub ARGS`` through :func:`lape_hub.cli.main` in this process (its error
    mapping included); an exception that escapes it becomes exit 1 and a traceback."""
    from lape_hub.cli import main

    out, err = io.StringIO(), io.StringIO()
    finders = list(sys.meta_path)          # main() hides pandas for read-only commands
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:              # noqa: BLE001 - the test reports it as a traceback
            traceback.print_exc()
            code = 1
    sys.meta_path[:] = finders
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture
def token_file(tmp_path) -> tuple[Path, bytes]:
    """A fake Hugging Face token file outside every folder that is published."""
    secret = b"hf_FAKE_" + secrets.token_hex(16).encode()
    path = tmp_path / "secrets" / "token"
    path.parent.mkdir()
    path.write_bytes(secret)
    return path, secret


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [p.as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()
            and needle in p.read_bytes()] if root.exists() else []


def repo_heads(hub) -> dict:
    return {k: r.head for k, r in hub.repos.items()}


def outside_cache(tmp_path: Path) -> dict[str, str]:
    """Hashes of every file under tmp_path but the lape-hub cache (where a remote read may
    record which commit a branch points to before it refuses the commit's files)."""
    return {k: v for k, v in tree_hashes(tmp_path).items() if not k.startswith("lape-cache/")}


def published(hub, tmp_path) -> Path:
    root = tmp_path / "local"
    publish_catalog(build_catalog(root), REPO, backoff=0.01)
    return root


def remote_fetch(tmp_path, *more: str) -> subprocess.CompletedProcess:
    return cli("fetch", "--model", "gemma-3-270m", "--lang", "ne", "--hub-repo", REPO,
               "-o", str(tmp_path / "out.json"), *more)


# -- publishing: symlinks, special files, stray files ----------------------------------------------
def test_token_symlink_in_adapter_is_refused_and_never_sent(hub, tmp_path, token_file):
    path, secret = token_file
    # control: a clean publish does put the folder's bytes on the Hub, and the scan sees them
    clean = make_adapter(tmp_path / "clean", evals=False)
    publish_adapter(clean, "alice/clean", catalog=tmp_path / "no-catalog", backoff=0.01)
    assert (clean / "lape_adapter.json").read_bytes() in hub.received_bytes()

    folder = make_adapter(tmp_path / "adapter", evals=False)
    (folder / "token").symlink_to(path)
    before, heads = tree_hashes(folder), repo_heads(hub)
    stage = tmp_path / "stage"
    for args in (["--hub-repo", "alice/leak"], ["--hub-repo", "alice/leak", "--dry-run",
                                                 str(stage)]):
        line = assert_one_line_error(cli("publish", "adapter", str(folder), *args),
                                     needle="'token' (symlink)")
        assert "refused to publish adapter folder" in line
    assert secret not in hub.received_bytes()
    assert not files_containing(stage, secret) and not stage.exists()
    assert ("model", "alice/leak") not in hub.repos and repo_heads(hub) == heads
    assert tree_hashes(folder) == before and path.read_bytes() == secret


def test_symlink_under_an_allowed_name_is_refused(hub, tmp_path, token_file):
    path, secret = token_file
    folder = make_adapter(tmp_path / "adapter", evals=False)
    (folder / "eval_results.json").symlink_to(path)          # a name on the allow-list
    assert_one_line_error(cli("publish", "adapter", str(folder), "--hub-repo", "alice/leak"),
                          needle="'eval_results.json' (symlink)")
    assert secret not in hub.received_bytes()


def test_symlinked_subfolder_is_refused(hub, tmp_path, token_file):
    path, secret = token_file
    folder = make_adapter(tmp_path / "adapter", evals=False)
    (folder / "extra").symlink_to(path.parent, target_is_directory=True)
    assert_one_line_error(cli("publish", "adapter", str(folder), "--hub-repo", "alice/leak"),
                          needle="'extra' (symlink)")
    assert secret not in hub.received_bytes()


def test_fifo_and_device_in_adapter_are_refused(hub, tmp_path):
    folder = make_adapter(tmp_path / "adapter", evals=False)
    os.mkfifo(folder / "pipe")
    names = ["'pipe' (fifo)"]
    try:
        os.mknod(folder / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        names.append("'null' (character device)")
    except (PermissionError, OSError):
        pass                                  # not root: the fifo stands for special files
    line = assert_one_line_error(cli("publish", "adapter", str(folder), "--hub-repo",
                                     "alice/ad", "--dry-run", str(tmp_path / "stage")))
    assert all(n in line for n in names), line
    assert not hub.repos.get(("model", "alice/ad"))


@pytest.mark.parametrize("attack", ["hard link", "token copied as weights",
                                    "token copied as JSON", "merged folder link"])
def test_token_under_an_allowed_name_is_refused(hub, tmp_path, token_file, attack):
    path, secret = token_file
    folder = make_adapter(tmp_path / "adapter", evals=False)
    merged = None
    if attack == "hard link":
        (folder / "eval_results.json").unlink(missing_ok=True)
        os.link(path, folder / "eval_results.json")
        needle = "'eval_results.json' (hard link)"
    elif attack == "token copied as weights":
        (folder / "dense_weights.safetensors").write_bytes(secret)
        needle = "'dense_weights.safetensors' (not a safetensors file)"
    elif attack == "token copied as JSON":
        (folder / "eval_results.json").write_bytes(secret)
        needle = "'eval_results.json' (not valid JSON)"
    else:
        merged = tmp_path / "merged"
        merged.mkdir()
        (merged / "config.json").write_text("{}")
        (merged / "tokenizer.model").symlink_to(path)
        needle = "refused to publish merged model folder"
    args = ["publish", "adapter", str(folder), "--hub-repo", "alice/leak"]
    if merged is not None:
        args += ["--merged", str(merged)]
    for extra in ([], ["--dry-run", str(tmp_path / "stage")]):
        assert_one_line_error(cli(*args, *extra), needle=needle)
    assert secret not in hub.received_bytes()
    assert not files_containing(tmp_path / "stage", secret)


def test_stray_file_in_adapter_is_named(hub, tmp_path):
    folder = make_adapter(tmp_path / "adapter", evals=False)
    (folder / "notes.txt").write_text("my private notes")
    (folder / ".env").write_text("HF_TOKEN=x")
    line = assert_one_line_error(cli("publish", "adapter", str(folder), "--hub-repo", "alice/ad"),
                                 needle="2 entries")
    assert "'notes.txt' (not on the allow-list)" in line and "'.env'" in line
    assert b"my private notes" not in hub.received_bytes()


@pytest.mark.parametrize("attack", ["symlinked partition", "stray file", "fifo",
                                    "symlinked table folder", "hard-linked partition"])
def test_catalog_folder_with_links_or_stray_files_is_refused(hub, tmp_path, token_file, attack):
    path, secret = token_file
    root = tmp_path / "cat"
    build_catalog(root)
    if attack == "symlinked partition":
        target = next(root.glob("activation_counts/**/data.parquet"))
        target.unlink()
        target.symlink_to(path)
        needle = "(symlink)"
    elif attack == "stray file":
        (root / "neurons" / "notes.txt").write_bytes(secret)
        needle = "'neurons/notes.txt' (not on the allow-list)"
    elif attack == "fifo":
        os.mkfifo(root / "CATALOG.json.pipe")
        needle = "(fifo)"
    elif attack == "hard-linked partition":
        target = next(root.glob("activation_counts/**/data.parquet"))
        os.link(target, root / "activation_counts" / "copy.parquet")
        needle = "(hard link)"
    else:
        (root / "lape").symlink_to(path.parent, target_is_directory=True)
        needle = "'lape' (symlink)"
    before = tree_hashes(root)
    for extra in ([], ["--dry-run", str(tmp_path / "stage")]):
        assert_one_line_error(cli("publish", "catalog", "--catalog", str(root), "--hub-repo",
                                  REPO, *extra), needle=needle)
    assert secret not in hub.received_bytes() and not hub.repos.get(("dataset", REPO))
    assert tree_hashes(root) == before


def test_dry_run_stages_exactly_what_a_publish_sends(hub, tmp_path):
    root = tmp_path / "cat"
    build_catalog(root)
    folder = make_adapter(tmp_path / "adapter")
    for kind, args, repo, repo_type in (
            ("catalog", ["--catalog", str(root)], REPO, "dataset"),
            ("adapter", [str(folder)], "alice/ad", "model")):
        stage = tmp_path / f"stage-{kind}"
        r = cli("publish", kind, *args, "--hub-repo", repo, "--dry-run", str(stage))
        assert r.returncode == 0, r.stderr
        staged = {p.relative_to(stage).as_posix(): p.read_bytes() for p in stage.rglob("*")
                  if p.is_file() and p.name != ".lape-hub-staging"}
        assert cli("publish", kind, *args, "--hub-repo", repo).returncode == 0
        sent = hub.files(repo, repo_type)
        sent.pop(".gitattributes")
        assert sent == staged, kind


@pytest.mark.parametrize("where", ["inside the catalog", "inside the cache", "an existing file",
                                   "under a file", "unwritable parent"])
def test_dry_run_folder_is_checked_before_any_work(hub, tmp_path, where):
    root = tmp_path / "cat"
    build_catalog(root)
    if where == "inside the catalog":
        stage, needle = root / "neurons" / "stage", "inside the catalog"
    elif where == "inside the cache":
        stage, needle = Path(os.environ["LAPE_HUB_CACHE"]) / "stage", "inside the lape-hub cache"
    elif where == "an existing file":
        stage, needle = tmp_path / "afile", "is a file"
        stage.write_text("keep me")
    elif where == "under a file":
        (tmp_path / "afile").write_text("keep me")
        stage, needle = tmp_path / "afile" / "stage", "not a folder"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        if os.access(ro, os.W_OK):                 # root: a folder root cannot write either
            ro = Path("/proc/1")
            if os.access(ro, os.W_OK):
                pytest.skip("no unwritable folder for this user")
        stage, needle = ro / "stage", "not writable"
    before = tree_hashes(tmp_path)
    hub.requests.clear()
    assert_one_line_error(cli("publish", "catalog", "--catalog", str(root), "--hub-repo", REPO,
                              "--dry-run", str(stage)), needle=needle)
    assert tree_hashes(tmp_path) == before and not hub.requests    # checked before any call


# -- names a server sends ---------------------------------------------------------------------
@pytest.mark.parametrize("sha", ["../../../../etc", "A" * 40, "0" * 39, "0" * 40 + "/x",
                                 "0" * 40 + "\n"])
def test_malformed_commit_sha_is_refused(hub, tmp_path, sha):
    published(hub, tmp_path)
    hub.info_hook = lambda doc: dict(doc, sha=sha)
    cache = Path(os.environ["LAPE_HUB_CACHE"])
    before = tree_hashes(tmp_path)
    assert_one_line_error(remote_fetch(tmp_path), needle="malformed commit id")
    assert tree_hashes(tmp_path) == before
    assert not list(cache.rglob("*.parquet"))
    # publishing against such a remote is refused as well, before anything is sent
    hub.requests.clear()
    assert_one_line_error(cli("publish", "catalog", "--catalog", str(tmp_path / "local"),
                              "--hub-repo", REPO, "--force"), needle="malformed commit id")
    assert not [m for m, _, _ in hub.requests if m in ("POST", "PUT")]


@pytest.mark.parametrize("name", [
    "neurons/../../../escaped/data.parquet",
    "/tmp/escaped/data.parquet",
    "neurons\\..\\..\\escaped\\data.parquet",
    "neurons/model=gemma-3-270m/refset=paper-12/selection=../../../../escaped/data.parquet",
    "neurons/model=gemma-3-270m/refset=paper-12/data.parquet",
    "neurons/model=a\nb/refset=r/selection=s/data.parquet",
    "C:/escaped/data.parquet",
])
def test_hostile_file_names_in_the_listing_are_refused(hub, tmp_path, name):
    published(hub, tmp_path)
    real = hub.files(REPO)[NEURONS]

    def add_hostile(listing):
        e = next(x for x in listing if x["path"] == NEURONS)
        return listing + [dict(e, path=name)]

    hub.tree_hook = add_hostile
    hub.resolve_hook = lambda path, data: real if path == name else data
    before = outside_cache(tmp_path)
    line = assert_one_line_error(remote_fetch(tmp_path), needle="refused")
    assert "\n" not in line
    assert outside_cache(tmp_path) == before
    cache = Path(os.environ["LAPE_HUB_CACHE"])
    assert not list(cache.rglob("*.parquet")) and not list(cache.rglob(".lape-hub-remote.json"))
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()
    assert not [p for _, p, _ in hub.requests if "escaped" in p]       # never even requested


def test_download_over_the_cap_is_refused_and_the_cap_is_configurable(hub, tmp_path,
                                                                      monkeypatch):
    published(hub, tmp_path)
    size = len(hub.files(REPO)[NEURONS])
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", str(size / 2 / 2**20))
    line = assert_one_line_error(remote_fetch(tmp_path), needle="over the download cap")
    assert "LAPE_HUB_MAX_DOWNLOAD_MB" in line and "max_download_mb" in line
    assert not list(Path(os.environ["LAPE_HUB_CACHE"]).rglob("*.parquet"))
    assert not [p for m, p, _ in hub.requests if m == "GET" and p.endswith(".parquet")]
    # the config file's key, and a bad value in either place
    monkeypatch.delenv("LAPE_HUB_MAX_DOWNLOAD_MB")
    Path(os.environ["LAPE_HUB_CONFIG"]).write_text("[hub]\nmax_download_mb = 0.0001\n")
    assert_one_line_error(remote_fetch(tmp_path), needle="over the download cap")
    Path(os.environ["LAPE_HUB_CONFIG"]).write_text("[hub]\nmax_download_mb = 64\n")
    assert remote_fetch(tmp_path).returncode == 0
    monkeypatch.setenv("LAPE_HUB_MAX_DOWNLOAD_MB", "-3")
    assert_one_line_error(remote_fetch(tmp_path), needle="must be a positive number")


def test_a_server_sending_more_than_it_lists_is_stopped_while_streaming(hub, tmp_path,
                                                                         monkeypatch):
    published(hub, tmp_path)
    extra = os.urandom(4 << 20)
    hub.resolve_hook = lambda path, data: data + extra if path == NEURONS else data
    line = assert_one_line_error(remote_fetch(tmp_path), needle="stopped, nothing kept")
    assert "bytes its listing gives" in line
    cache = Path(os.environ["LAPE_HUB_CACHE"])
    assert not list(cache.rglob("*.parquet")) and not list(cache.rglob(".tmp-*"))

    # stopped while streaming, not after: the client reads at most one chunk past the limit
    import lape_hub.hub_files as hf

    seen = []

    class Counting(hf._stream):
        def __enter__(self):
            chunks = super().__enter__()

            def counted():
                for c in chunks:
                    seen.append(len(c))
                    yield c
            return counted()

    monkeypatch.setattr(hf, "_stream", Counting)
    assert_one_line_error(remote_fetch(tmp_path), needle="stopped, nothing kept")
    assert sum(seen) < len(hub.files(REPO)[NEURONS]) + len(extra) // 2, sum(seen)


def test_a_file_that_does_not_match_its_listing_never_lands(hub, tmp_path):
    published(hub, tmp_path)
    hub.resolve_hook = lambda path, data: bytes(reversed(data)) if path == NEURONS else data
    assert_one_line_error(remote_fetch(tmp_path), needle="does not match the checksum")
    assert not list(Path(os.environ["LAPE_HUB_CACHE"]).rglob("*.parquet"))


def test_tampered_cache_is_downloaded_again_or_refused_offline(hub, tmp_path, monkeypatch,
                                                               token_file):
    published(hub, tmp_path)
    assert remote_fetch(tmp_path).returncode == 0
    cached = hub_cache_dir(REPO) / hub.repo(REPO).head / NEURONS
    good = cached.read_bytes()
    cached.write_bytes(good[:-20] + b"\0" * 20)                 # same size, other bytes
    assert remote_fetch(tmp_path).returncode == 0
    assert cached.read_bytes() == good                           # downloaded again
    # a link planted in the cache is replaced, never written through
    path, secret = token_file
    cached.unlink()
    cached.symlink_to(path)
    assert remote_fetch(tmp_path).returncode == 0
    assert not cached.is_symlink() and cached.read_bytes() == good
    assert path.read_bytes() == secret
    # offline there is nothing to download it from: refused in one line
    cached.write_bytes(b"PAR1" + good[4:-20] + b"\1" * 20)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = tree_hashes(hub_cache_dir(REPO))
    assert_one_line_error(remote_fetch(tmp_path), needle="does not match the checksum")
    assert tree_hashes(hub_cache_dir(REPO)) == before


def test_cache_files_not_verified_by_this_call_are_never_read(hub, tmp_path, token_file):
    """SQL views read every cached entry, not only the ones a call asked for: changed,
    planted or linked files are removed from the cache before the catalog is handed out."""
    local = published(hub, tmp_path)
    count = "SELECT count(*) AS n FROM activation_counts"
    want = cli("sql", "--catalog", str(local), count, "--format", "csv").stdout
    assert cli("sql", "--remote", "--hub-repo", REPO, count, "--format", "csv").stdout == want
    root = hub_cache_dir(REPO) / hub.repo(REPO).head
    counts = sorted(root.glob("activation_counts/**/data.parquet"))
    counts[0].write_bytes(counts[1].read_bytes())       # a valid file, but not this one
    planted = root / NEURONS.replace("model=gemma-3-270m", "model=llama-3.1-8b")
    planted.parent.mkdir(parents=True)
    planted.write_bytes((root / NEURONS).read_bytes())
    path, _ = token_file
    (root / "activation_counts" / "model=x").symlink_to(path.parent, target_is_directory=True)
    assert remote_fetch(tmp_path).returncode == 0          # asks for gemma's neurons only
    assert not planted.exists() and not counts[0].exists()
    assert not (root / "activation_counts" / "model=x").exists() and path.exists()
    assert cli("sql", "--remote", "--hub-repo", REPO, count, "--format", "csv").stdout == want


def test_damaged_cache_record_or_ref(hub, tmp_path, monkeypatch):
    published(hub, tmp_path)
    assert remote_fetch(tmp_path).returncode == 0
    head = hub.repo(REPO).head
    record = hub_cache_dir(REPO) / head / ".lape-hub-remote.json"
    record.write_text("{not json")
    assert remote_fetch(tmp_path).returncode == 0               # listed again online
    assert json.loads(record.read_text())["sha"] == head
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (hub_cache_dir(REPO) / "refs" / "main").write_text("../../../etc\n")
    assert_one_line_error(remote_fetch(tmp_path), needle="malformed commit id")
    (hub_cache_dir(REPO) / "refs" / "main").write_text(head + "\n")
    record.write_text(json.dumps({"files": {"../x": {"size": 1, "oid": "0" * 40,
                                                     "sha256": None}}}))
    assert_one_line_error(remote_fetch(tmp_path), needle="unsafe file name")


@pytest.mark.parametrize("revision,needle", [
    ("..", "not a valid revision name"), (".", "not a valid revision name"),
    ("a/../../b", "not a valid revision name"), ("main\n", "not a valid revision name"),
    (".hidden", "not a valid revision name"), ("%2e%2e", "revision not found")])
def test_revision_names_stay_inside_the_refs_folder(hub, tmp_path, revision, needle):
    published(hub, tmp_path)
    before = tree_hashes(tmp_path)
    assert_one_line_error(remote_fetch(tmp_path, "--revision", revision), needle=needle)
    assert tree_hashes(tmp_path) == before


# -- damaged or foreign files, remote -------------------------------------------------------------
MANIFESTS = {
    "version 1.5": b'{"format": "lape-hub-catalog", "schema_version": 1.5}',
    "version \"1\"": b'{"format": "lape-hub-catalog", "schema_version": "1"}',
    "version true": b'{"format": "lape-hub-catalog", "schema_version": true}',
    "version null": b'{"format": "lape-hub-catalog", "schema_version": null}',
    "not JSON": b"{not json",
    "a list": b"[1]",
    "other format": b'{"format": "something-else", "schema_version": 1}',
    "not UTF-8": b'\xff\xfe{"schema_version": 1}',
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_damaged_remote_manifest(hub, tmp_path, name):
    local = build_catalog(tmp_path / "local", counts=False)
    hub.add_repo(REPO, files={"CATALOG.json": MANIFESTS[name],
                              NEURONS: (local.root / NEURONS).read_bytes()})
    line = assert_one_line_error(remote_fetch(tmp_path), needle="CATALOG.json")
    assert "not a lape-hub catalog manifest" in line
    # and publishing into such a repo is refused too, before anything is committed
    head = hub.repo(REPO).head
    assert_one_line_error(cli("publish", "catalog", "--catalog", str(local.root),
                              "--hub-repo", REPO), needle="CATALOG.json")
    assert hub.repo(REPO).head == head


@pytest.mark.parametrize("damage", ["foreign schema", "truncated"])
def test_damaged_remote_parquet(hub, tmp_path, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    local = build_catalog(tmp_path / "local", counts=False)
    good = (local.root / NEURONS).read_bytes()
    if damage == "truncated":
        bad = good[: len(good) // 2]
    else:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"lang": ["npi_Deva"], "x": [1]}), sink)
        bad = sink.getvalue().to_pybytes()
    hub.add_repo(REPO, files={"CATALOG.json": (local.root / "CATALOG.json").read_bytes(),
                              NEURONS: bad})
    line = assert_one_line_error(remote_fetch(tmp_path))
    assert f"dataset repo {REPO}@" in line and "data.parquet" in line
    assert ("corrupt Parquet file" if damage == "truncated" else "does not match schema") in line
    r = cli("sql", "--remote", "--hub-repo", REPO, "SELECT count(*) FROM neurons")
    assert_one_line_error(r, needle="data.parquet")
    # publishing over the damaged remote copy: named, refused without --force
    head = hub.repo(REPO).head
    args = ["publish", "catalog", "--catalog", str(local.root), "--hub-repo", REPO]
    line = assert_one_line_error(cli(*args), needle="damaged or foreign")
    assert NEURONS in line and "--force" in line and hub.repo(REPO).head == head
    assert cli(*args, "--force").returncode == 0
    assert hub.files(REPO)[NEURONS] == good


# -- damaged or foreign files, local, through every command that reads them ----------------------
def _damage(root: Path, how: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if how.startswith("manifest "):
        (root / "CATALOG.json").write_bytes(MANIFESTS[how[len("manifest "):]])
        return "CATALOG.json"
    rel = NEURONS if how.endswith("neurons") else \
        next(root.glob("activation_counts/**/data.parquet")).relative_to(root).as_posix()
    p = root / rel
    if how.startswith("truncated"):
        p.write_bytes(p.read_bytes()[:-100])
    elif how.startswith("corrupt pages"):           # the footer intact, the first pages not
        data = bytearray(p.read_bytes())
        data[8:400] = bytes(b ^ 0x5A for b in data[8:400])
        p.write_bytes(bytes(data))
    else:
        pq.write_table(pa.table({"model": ["gemma-3-270m"], "lang": ["npi_Deva"], "x": [1]}), p)
    return rel


READERS = {
    "list": lambda root, tmp: ["list", "--catalog", str(root)],
    "fetch": lambda root, tmp: ["fetch", "--model", "gemma-3-270m", "--lang", "ne",
                                "--catalog", str(root), "-o", str(tmp / "out.json")],
    "overlap": lambda root, tmp: ["overlap", "--model", "gemma-3-270m", "--catalog", str(root)],
    "sql": lambda root, tmp: ["sql", "SELECT count(*) FROM neurons, activation_counts",
                              "--catalog", str(root)],
    "publish": lambda root, tmp: ["publish", "catalog", "--catalog", str(root), "--hub-repo",
                                  REPO, "--dry-run", str(tmp / "stage")],
}
# which commands read which file: fetch and overlap read only the neurons entry
DAMAGES = {"truncated neurons": list(READERS), "foreign neurons": list(READERS),
           "truncated counts": ["list", "sql", "publish"],
           "foreign counts": ["list", "sql", "publish"],
           "manifest version 1.5": list(READERS), "manifest not JSON": list(READERS),
           "manifest version \"1\"": ["list", "fetch"],
           "corrupt pages neurons": ["fetch", "publish"]}


@pytest.mark.parametrize("how,command", [(h, c) for h, cs in DAMAGES.items() for c in cs])
def test_damaged_local_files_are_named_by_every_reader(hub, tmp_path, how, command):
    root = tmp_path / "cat"
    build_catalog(root)
    name = _damage(root, how)
    before = tree_hashes(root)
    line = assert_one_line_error(cli(*READERS[command](root, tmp_path)))
    assert name in line or name.split("/")[0] in line, line
    assert tree_hashes(root) == before
    assert not (tmp_path / "out.json").exists() and not hub.repos


@pytest.mark.parametrize("what", ["CATALOG.json", "partition"])
def test_a_pipe_in_the_catalog_does_not_hang_a_reader(tmp_path, what):
    root = tmp_path / "cat"
    build_catalog(root)
    target = root / "CATALOG.json" if what == "CATALOG.json" else \
        next(root.glob("activation_counts/**/data.parquet"))
    target.unlink()
    os.mkfifo(target)
    line = assert_one_line_error(run_cli("list", "--catalog", str(root), timeout=60))
    assert "regular file" in line


def test_damaged_files_through_the_real_entry_point(tmp_path):
    """The same, through `python -m lape_hub.cli` (no fake Hub needed)."""
    root = tmp_path / "cat"
    build_catalog(root)
    _damage(root, "foreign neurons")
    before = tree_hashes(root)
    for command in ("list", "overlap"):
        r = run_cli(*READERS[command](root, tmp_path))
        assert_one_line_error(r, needle="does not match schema")
    assert tree_hashes(root) == before
    (root / "CATALOG.json").write_bytes(MANIFESTS["version 1.5"])
    before = tree_hashes(root)
    assert_one_line_error(run_cli("list", "--catalog", str(root)), needle="schema_version 1.5")
    assert tree_hashes(root) == before


# -- the token: redacted even when a server repeats it -------------------------------------------
def test_a_server_echoing_the_token_gets_it_redacted_on_publish(hub, tmp_path):
    root = tmp_path / "cat"
    build_catalog(root, counts=False)
    hub.echo = True                                 # every error repeats the Authorization header
    hub.fail("POST", r"/commit/", 400)
    line = assert_one_line_error(cli("publish", "catalog", "--catalog", str(root),
                                     "--hub-repo", REPO), needle="HTTP 400")
    assert "Authorization: Bearer hf_***" in line   # the server's echo is shown, scrubbed
    assert ALICE not in line and ALICE[3:] not in line


def test_a_server_echoing_the_token_gets_it_redacted_on_remote_reads(hub, tmp_path):
    published(hub, tmp_path)
    hub.echo = True
    hub.fail("GET", r"/tree/", 400)
    line = assert_one_line_error(remote_fetch(tmp_path), needle="HTTP 400")
    assert "Bearer hf_***" in line and ALICE[3:] not in line


def test_a_token_smuggled_into_a_file_name_is_redacted(hub, tmp_path):
    published(hub, tmp_path)
    hub.tree_hook = lambda listing: listing + [dict(listing[-1], path=f"../{ALICE}")]
    line = assert_one_line_error(remote_fetch(tmp_path), needle="unsafe file name")
    assert "hf_***" in line and ALICE[3:] not in line
    hub.tree_hook = None
    hub.info_hook = lambda doc: dict(doc, sha=ALICE)
    line = assert_one_line_error(remote_fetch(tmp_path), needle="malformed commit id")
    assert "hf_***" in line and ALICE[3:] not in line


def test_remote_catalog_library_call_raises_typed_errors(hub, tmp_path):
    """The library raises the typed error the CLI maps (no CLI needed to be safe)."""
    from lape_hub.errors import HubError

    published(hub, tmp_path)
    hub.info_hook = lambda doc: dict(doc, sha="../../x")
    with pytest.raises(HubError, match="malformed commit id"):
        remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
