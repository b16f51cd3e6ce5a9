"""Fast in-process tests that kill publisher.py's mutants (issue 14).

Everything runs against the fake Hub of ``hub_server.py`` in this process (no CLI
subprocess), so ``scripts/mutation.py publisher`` can attribute each test to the mutants it
exercises. Expected values are written out or computed here by other means (hashlib, the
fake Hub's own state), never by calling the code under test.
"""
from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from hub_server import ALICE, build_catalog, hub  # noqa: F401 - fixture
from test_publisher import make_adapter

from lape_hub import publisher
from lape_hub.errors import HubError, LapeHubError
from lape_hub.hub_files import LocalFile, RemoteFile
from lape_hub.publisher import (Change, Plan, PublishResult, RemoteState, _commit, _diff,
                                _unreachable, adapter_files, catalog_data_files,
                                content_problem, plan_adapter, publish_adapter,
                                publish_catalog, remote_state)

REPO = "alice/lape-catalog"
FAST = {"backoff": 0.01}
SECRET = ALICE[3:]          # the distinctive tail: no part of the token may show


def _scrubbed(err: BaseException) -> str:
    text = str(err)
    assert SECRET not in text and "hf_***" in text, text
    return text


# -- the token: a server that repeats it, in places only the publisher's guard sees -------------
def _publish_refused(target: str, tmp_path, match: str) -> HubError:
    """Publish a fresh catalog or adapter to REPO / alice/ad; the refusal it must raise."""
    with pytest.raises(HubError, match=match) as e:
        if target == "catalog":
            publish_catalog(build_catalog(tmp_path / "cat", counts=False), REPO, **FAST)
        else:
            publish_adapter(make_adapter(tmp_path / "ad", evals=False), "alice/ad", **FAST)
    return e.value


@pytest.mark.parametrize("target", ["catalog", "adapter"])
def test_a_token_sent_back_as_the_head_commit_is_redacted(hub, tmp_path, target):
    """The commit id is checked (not an error built by hub_error, which redacts on its own):
    only the publisher's ``redacting(token)`` can scrub it."""
    hub.add_repo(REPO)
    hub.add_repo("alice/ad", "model")
    hub.info_hook = lambda doc: dict(doc, sha=ALICE)
    _scrubbed(_publish_refused(target, tmp_path, "malformed commit id"))


@pytest.mark.parametrize("target", ["catalog", "adapter"])
def test_a_token_sent_back_as_a_file_name_is_redacted(hub, tmp_path, target):
    hub.add_repo(REPO, files={"notes.txt": b"x"})
    hub.add_repo("alice/ad", "model", files={"notes.txt": b"x"})
    hub.tree_hook = lambda listing: listing + [dict(listing[-1], path=f"../{ALICE}")]
    _scrubbed(_publish_refused(target, tmp_path, "unsafe file name"))


@pytest.mark.parametrize("method, path, action", [
    ("GET", r"/api/datasets/alice/lape-catalog/revision/", "reading"),
    ("POST", r"/api/repos/create", "creating"),
    ("POST", r"/commit/", "committing to"),
])
def test_a_refusal_at_each_step_is_named_and_its_echo_scrubbed(hub, tmp_path, method, path,
                                                               action):
    """An HTTP 400 from each of the three calls a first publish makes: the step and the repo
    are named, the echoing server's text is shown with the token scrubbed."""
    hub.echo = True
    hub.fail(method, path, 400)
    with pytest.raises(HubError) as e:
        publish_catalog(build_catalog(tmp_path / "cat", counts=False), REPO, **FAST)
    text = _scrubbed(e.value)
    assert text.startswith(f"the Hub refused {action} dataset repo {REPO} (HTTP 400): "), text
    assert e.value.status == 400
    assert ("dataset", REPO) not in hub.repos or len(hub.repo(REPO).commits) == 1


# -- the diff and the plan ------------------------------------------------------------------------
def _remote(path: str, data: bytes, *, lfs: bool = True) -> RemoteFile:
    """A listing entry as the Hub gives it: the git blob id, and the sha256 for LFS files."""
    oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return RemoteFile(path, len(data), oid, hashlib.sha256(data).hexdigest() if lfs else None)


def test_diff_sorts_files_into_added_changed_unchanged_deleted_and_kept():
    local = {p: LocalFile(p, d) for p, d in
             {"b/same-lfs": b"one", "a/same-git": b"two!", "c/changed": b"new bytes",
              "d/changed-size": b"xx", "e/new": b"fresh"}.items()}
    remote = RemoteState(True, "0" * 40, {
        "b/same-lfs": _remote("b/same-lfs", b"one"),
        "a/same-git": _remote("a/same-git", b"two!", lfs=False),
        "c/changed": _remote("c/changed", b"old bytes", lfs=False),
        "d/changed-size": RemoteFile("d/changed-size", 3, "1" * 40,
                                     hashlib.sha256(b"xx").hexdigest()),   # same sha, size differs
        "z/remote-only": _remote("z/remote-only", b"12345"),
        "y/unmanaged": _remote("y/unmanaged", b"123")})
    managed = lambda p: not p.startswith("y/")   # noqa: E731
    got = [(c.path, c.status, c.size) for c in _diff(local, remote, managed=managed, prune=False)]
    assert got == [("a/same-git", "unchanged", 4), ("b/same-lfs", "unchanged", 3),
                   ("c/changed", "changed", 9), ("d/changed-size", "changed", 2),
                   ("e/new", "added", 5), ("z/remote-only", "kept", 5)]
    pruned = _diff(local, remote, managed=managed, prune=True)
    assert [(c.path, c.status, c.size) for c in pruned][-1] == ("z/remote-only", "deleted", 5)
    assert all(c.note == "" for c in pruned)


def _plan(changes, *, exists=True, files=None, parent="f" * 40):
    files = files if files is not None else {
        c.path: LocalFile(c.path, c.path.encode()) for c in changes if c.status != "deleted"}
    return Plan("alice/x", "dataset", parent, exists, files, changes, "the message", "desc")


def test_plan_counts_pending_and_report_lines():
    changes = [Change("m/kept", "kept", 1), Change("b/unch", "unchanged", 1),
               Change("c/gone", "deleted", 1), Change("a/new", "added", 1),
               Change("d/skip", "skipped", 1, "the remote has it"), Change("b/new", "added", 1),
               Change("e/chg", "changed", 1, "why")]
    plan = _plan(changes, exists=False)
    assert plan.counts() == {"added": 2, "changed": 1, "deleted": 1, "unchanged": 1, "kept": 1,
                             "skipped": 1}
    assert [c.path for c in plan.pending] == ["c/gone", "a/new", "b/new", "e/chg"]
    assert plan.report_lines() == [
        "dataset repo alice/x (new): 2 added, 1 changed, 1 deleted, 1 unchanged "
        "(1 kept, 1 skipped)",
        "  added     a/new", "  added     b/new", "  changed   e/chg  (why)",
        "  deleted   c/gone", "  skipped   d/skip  (the remote has it)",
        "commit: the message"]
    assert plan.report_lines(verbose=True)[1:] == [
        "  added     a/new", "  added     b/new", "  changed   e/chg  (why)",
        "  deleted   c/gone", "  unchanged b/unch", "  kept      m/kept",
        "  skipped   d/skip  (the remote has it)", "commit: the message"]
    quiet = _plan([Change("a", "unchanged", 1), Change("b", "kept", 2)])
    assert quiet.report_lines() == [
        "dataset repo alice/x: 0 added, 0 changed, 0 deleted, 1 unchanged (1 kept)"]
    assert quiet.pending == [] and _plan([]).report_lines() == [
        "dataset repo alice/x: 0 added, 0 changed, 0 deleted, 0 unchanged"]


def test_stage_writes_the_whole_tree_and_guards_its_folder(tmp_path):
    changes = [Change("a/new.txt", "added"), Change("same.txt", "unchanged"),
               Change("gone.txt", "deleted")]
    plan = _plan(changes, files={"a/new.txt": LocalFile("a/new.txt", b"new"),
                                 "same.txt": LocalFile("same.txt", b"same")})
    out = plan.stage(tmp_path / "st" / "deep")
    assert out == tmp_path / "st" / "deep"
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == {"a/new.txt": b"new", "same.txt": b"same",
                   ".lape-hub-staging": f"dataset alice/x @ {'f' * 40}\n".encode()}
    # staged before: replaced whole (a file left from the last staging does not survive)
    (out / "old.txt").write_text("left over")
    new = _plan(changes, parent=None, files={"b.txt": LocalFile("b.txt", b"b")})
    new.stage(out)
    assert sorted(p.name for p in out.iterdir()) == [".lape-hub-staging", "b.txt"]
    assert (out / ".lape-hub-staging").read_text() == "dataset alice/x @ (new repo)\n"
    # a foreign folder, a marker that is a link, a link to a folder: refused, untouched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(LapeHubError) as e:
        plan.stage(foreign)
    assert str(e.value) == (f"--dry-run folder {foreign} is not empty (and was not staged by "
                            "lape-hub): pick an empty or new folder")
    (tmp_path / "marker").write_text("x")
    (foreign / ".lape-hub-staging").symlink_to(tmp_path / "marker")
    with pytest.raises(LapeHubError, match="is not empty"):
        plan.stage(foreign)
    (foreign / ".lape-hub-staging").unlink()
    (foreign / ".lape-hub-staging").mkdir()               # a folder named like the marker
    with pytest.raises(LapeHubError, match="is not empty"):
        plan.stage(foreign)
    assert (foreign / "mine.txt").read_text() == "keep"
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    with pytest.raises(LapeHubError, match="is a symlink"):
        plan.stage(tmp_path / "link")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plan.stage(empty) == empty and (empty / "same.txt").read_bytes() == b"same"


def test_publish_result_summary(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    plan = _plan([Change("a", "added")])
    assert PublishResult(plan, staged=tmp_path).summary() == \
        f"dry run: staged 1 files in {tmp_path}; nothing pushed"
    assert PublishResult(plan, commit="0123456789abcdef").summary() == \
        "committed 0123456789ab to https://hub.example/datasets/alice/x"
    assert PublishResult(plan, commit="0123456789abcdef", replanned=True).summary() == \
        ("committed 0123456789ab to https://hub.example/datasets/alice/x (re-planned after a "
         "concurrent publish)")
    model = Plan("alice/m", "model", None, False, {}, [], "m", "d")
    assert PublishResult(model).summary() == "https://hub.example/alice/m is up to date: no commit"


# -- _commit: conflicts, retries, errors (a scripted client, no server) --------------------------
class _Status(Exception):
    def __init__(self, status: int | None, text: str = "boom"):
        super().__init__(text)
        self.response = SimpleNamespace(status_code=status, headers={}) if status else None


class _Api:
    """create_commit answers from a script: an exception to raise, or None for success."""

    def __init__(self, *script):
        self.script, self.calls = list(script), []

    def create_commit(self, repo_id, ops, **kw):
        self.calls.append((repo_id, [(type(o).__name__, o.path_in_repo) for o in ops], kw))
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        return SimpleNamespace(oid=f"{len(self.calls):040d}", commit_url=f"url{len(self.calls)}")


def _pending_plan(parent="a" * 40):
    return _plan([Change("x.txt", "added"), Change("y.txt", "deleted")], parent=parent)


def test_commit_sends_the_plan_once_and_names_its_parent():
    api = _Api()
    plan = _pending_plan()
    got = _commit(api, plan, replan=lambda: pytest.fail("no re-plan"), token=None, retries=0,
                  backoff=0)
    assert got == (plan, "1".zfill(40), "url1", False)
    assert api.calls == [("alice/x", [("CommitOperationAdd", "x.txt"),
                                      ("CommitOperationDelete", "y.txt")],
                          {"commit_message": "the message", "commit_description": "desc",
                           "repo_type": "dataset", "revision": "main",
                           "parent_commit": "a" * 40})]
    nothing = _plan([Change("x.txt", "unchanged")])
    assert _commit(api, nothing, replan=lambda: pytest.fail("no"), token=None, retries=0,
                   backoff=0) == (nothing, None, None, False)
    assert len(api.calls) == 1


@pytest.mark.parametrize("status", [409, 412])
def test_commit_replans_once_on_a_conflict_then_refuses(status, caplog):
    caplog.set_level(logging.INFO, logger="lape_hub.publisher")
    fresh = _pending_plan(parent="b" * 40)
    api = _Api(_Status(status))
    got = _commit(api, _pending_plan(), replan=lambda: fresh, token=None, retries=0, backoff=0)
    assert got == (fresh, "2".zfill(40), "url2", True)
    assert api.calls[1][2]["parent_commit"] == "b" * 40
    assert [r.getMessage() for r in caplog.records if r.name == "lape_hub.publisher"] == [
        f"remote head moved (HTTP {status}): re-planning on the new head"]
    # re-planned to nothing left to do: no second commit
    api = _Api(_Status(status))
    empty = _plan([Change("x.txt", "unchanged")])
    assert _commit(api, _pending_plan(), replan=lambda: empty, token=None, retries=0,
                   backoff=0) == (empty, None, None, True)
    api = _Api(_Status(status), _Status(status))
    with pytest.raises(HubError) as e:
        _commit(api, _pending_plan(), replan=_pending_plan, token=None, retries=3, backoff=0)
    assert str(e.value) == (
        f"dataset repo alice/x changed again while publishing (HTTP {status}: concurrent "
        "publishes); refused, nothing was committed by this run: run it again when the other "
        "publish is done")
    assert len(api.calls) == 2


def test_commit_after_a_retry_allows_one_more_conflict(monkeypatch):
    monkeypatch.setattr(publisher.time, "sleep", lambda s: None)
    api = _Api(_Status(503), _Status(412), _Status(412))
    assert _commit(api, _pending_plan(), replan=_pending_plan, token=None, retries=3,
                   backoff=0)[1:] == ("4".zfill(40), "url4", True)
    api = _Api(_Status(503), _Status(412), _Status(412), _Status(412))
    with pytest.raises(HubError, match="changed again"):
        _commit(api, _pending_plan(), replan=_pending_plan, token=None, retries=3, backoff=0)
    assert len(api.calls) == 4


def test_commit_retries_transient_failures_with_doubling_waits(monkeypatch, caplog):
    waits = []
    monkeypatch.setattr(publisher.time, "sleep", waits.append)
    caplog.set_level(logging.WARNING, logger="lape_hub.publisher")
    api = _Api(_Status(503), ConnectionError("reset"), _Status(429))
    assert _commit(api, _pending_plan(), replan=_pending_plan, token=None, retries=3,
                   backoff=0.5)[1] == "4".zfill(40)
    assert waits == [0.5, 1.0, 2.0]
    assert [r.getMessage() for r in caplog.records if r.name == "lape_hub.publisher"] == [
        "transient Hub error (503); retry 1/3 in 0.5s",
        "transient Hub error (ConnectionError); retry 2/3 in 1.0s",
        "transient Hub error (429); retry 3/3 in 2.0s"]
    # the defaults come from config: RETRIES tries, RETRY_BACKOFF_S doubling
    monkeypatch.setattr(publisher.config, "RETRIES", 2)
    monkeypatch.setattr(publisher.config, "RETRY_BACKOFF_S", 0.25)
    waits.clear()
    api = _Api(_Status(502), _Status(502), _Status(502))
    with pytest.raises(HubError) as e:
        _commit(api, _pending_plan(), replan=_pending_plan, token=None, retries=None,
                backoff=None)
    assert waits == [0.25, 0.5] and len(api.calls) == 3
    assert str(e.value) == ("the Hub failed (HTTP 502) while committing to dataset repo "
                            "alice/x; try again later")
    assert e.value.status == 502


def test_commit_connection_errors_are_retried_then_named(monkeypatch, caplog):
    waits = []
    monkeypatch.setattr(publisher.time, "sleep", waits.append)
    caplog.set_level(logging.WARNING, logger="lape_hub.publisher")
    api = _Api(ConnectionError("reset by peer"), ConnectionError("reset by peer"))
    with pytest.raises(HubError, match="cannot reach the Hub .* while committing to dataset "
                                       "repo alice/x"):
        _commit(api, _pending_plan(), replan=_pending_plan, token=None, retries=1, backoff=1.5)
    assert waits == [1.5] and len(api.calls) == 2
    assert [r.getMessage() for r in caplog.records if r.name == "lape_hub.publisher"] == [
        "transient Hub error (ConnectionError); retry 1/1 in 1.5s"]


def test_commit_errors_are_not_retried_and_the_token_is_scrubbed(monkeypatch):
    monkeypatch.setattr(publisher.time, "sleep", lambda s: pytest.fail("no retry"))
    api = _Api(_Status(400, f"bad request from {ALICE}"))
    with pytest.raises(HubError) as e:
        _commit(api, _pending_plan(), replan=_pending_plan, token=ALICE, retries=3, backoff=0)
    assert str(e.value) == ("committing to dataset repo alice/x failed: _Status: bad request "
                            "from hf_***")
    assert len(api.calls) == 1
    mine = LapeHubError("a file changed while uploading")
    with pytest.raises(LapeHubError) as e:
        _commit(_Api(mine), _pending_plan(), replan=_pending_plan, token=None, retries=3,
                backoff=0)
    assert e.value is mine


# -- reading the remote, and the run around it -----------------------------------------------------
def test_unreachable_follows_causes_and_contexts_eight_deep():
    class ConnectError(Exception): ...
    class ConnectTimeout(Exception): ...
    class NameResolutionError(Exception): ...
    for e in (ConnectionError(), ConnectionRefusedError(), socket.gaierror(), TimeoutError(),
              ConnectError(), ConnectTimeout(), NameResolutionError(),
              type("ConnectionError", (Exception,), {})()):
        assert _unreachable(e), e
    assert not _unreachable(ValueError("x")) and not _unreachable(None)

    def chain(depth: int, via: str) -> BaseException:
        e: BaseException = ConnectionError("down")
        for _ in range(depth):
            outer = ValueError("wrapped")
            setattr(outer, via, e)
            e = outer
        return e

    for via in ("__cause__", "__context__"):
        assert _unreachable(chain(1, via)) and _unreachable(chain(7, via))
        assert not _unreachable(chain(8, via))
    both = ValueError("outer")
    both.__cause__, both.__context__ = ConnectionError(), ValueError("other")
    assert _unreachable(both)
    ctx_only = ValueError("outer")
    ctx_only.__cause__, ctx_only.__context__ = None, TimeoutError()
    assert _unreachable(ctx_only)


def test_remote_state_tells_missing_from_refused(hub, tmp_path):
    from lape_hub.config import hub_api

    nobody = hub_api(None)
    assert remote_state(nobody, "alice/none", "dataset", token=None) == RemoteState(False)
    assert remote_state(hub_api(ALICE), "alice/none", "dataset", token=ALICE) == \
        RemoteState(False)
    hub.add_repo("alice/secret", private=True)
    assert remote_state(nobody, "alice/secret", "dataset", token=None).exists is False
    hub.fail("GET", r"/api/datasets/alice/secret", 401)       # 401 although a token was sent
    with pytest.raises(HubError, match=r"dataset repo alice/secret not found or private, and "
                                       r"no valid token was sent \(401\)") as e:
        remote_state(hub_api(ALICE), "alice/secret", "dataset", token=ALICE)
    assert e.value.status == 401
    hub.push_files("alice/secret", {"a.txt": b"abc"})
    state = remote_state(hub_api(ALICE), "alice/secret", "dataset", token=ALICE)
    assert state.exists and state.head == hub.repo("alice/secret").head
    assert state.files["a.txt"].oid == hashlib.sha1(b"blob 3\0abc").hexdigest()
    assert set(state.files) == {".gitattributes", "a.txt"}
    model = hub.add_repo("alice/m", "model")
    assert remote_state(hub_api(ALICE), "alice/m", "model", token=ALICE).head == model.head


def test_remote_state_marks_unreachable_only_when_nothing_answers(hub, monkeypatch):
    from lape_hub.config import hub_api

    hub.add_repo(REPO)
    hub.fail("GET", r"/api/datasets/", 500, times=10)
    with pytest.raises(HubError, match=r"the Hub failed \(HTTP 500\) while reading dataset "
                                       f"repo {REPO}") as e:
        remote_state(hub_api(ALICE), REPO, "dataset", token=ALICE)
    assert e.value.unreachable is False
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # nothing listens there
    with pytest.raises(HubError, match="cannot reach the Hub") as e:
        remote_state(hub_api(ALICE), REPO, "dataset", token=ALICE)
    assert e.value.unreachable is True


def test_dry_run_offline_or_unreachable_compares_with_nothing_but_a_failing_hub_stops_it(
        hub, tmp_path, monkeypatch):
    cat = build_catalog(tmp_path / "cat", counts=False)
    publish_catalog(cat, REPO, **FAST)
    n_files = len(catalog_data_files(cat)) + 1                 # + README.md
    hub.fail("GET", r"/api/datasets/", 500, times=10)
    with pytest.raises(HubError, match=r"HTTP 500"):           # reachable but failing: no stage
        publish_catalog(cat, REPO, dry_run=tmp_path / "s0", **FAST)
    assert not (tmp_path / "s0").exists()
    hub.faults.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = publish_catalog(cat, REPO, dry_run=tmp_path / "s1", **FAST)
    assert r.plan.message.endswith(" (offline: compared with nothing)")
    offline_message = r.plan.message.removesuffix(" (offline: compared with nothing)")
    assert r.plan.counts()["added"] == n_files and r.plan.exists is False
    assert r.plan.parent is None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    r = publish_catalog(cat, REPO, dry_run=tmp_path / "s2", **FAST)   # online: all unchanged
    assert r.plan.counts()["unchanged"] == n_files and "compared with nothing" not in \
        r.plan.message
    assert r.staged == tmp_path / "s2" and r.commit is None
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    r = publish_catalog(cat, REPO, dry_run=tmp_path / "s3", **FAST)
    assert r.plan.message.endswith(" (Hub unreachable: compared with nothing)")
    assert r.plan.counts()["added"] == n_files
    assert r.plan.exists is False and r.plan.parent is None
    # both compared with nothing: the same plan, its own message kept before the note
    assert r.plan.message.removesuffix(" (Hub unreachable: compared with nothing)") == \
        offline_message and offline_message.strip()
    with pytest.raises(HubError, match="cannot reach the Hub"):
        publish_catalog(cat, REPO, **FAST)


@pytest.mark.parametrize("private", [True, False])
def test_a_new_repo_is_created_then_planned_on_its_first_commit(hub, tmp_path, private):
    cat = build_catalog(tmp_path / "cat", counts=False)
    r = publish_catalog(cat, REPO, private=private, **FAST)
    repo = hub.repo(REPO)
    assert repo.private is private
    assert r.plan.parent == repo.commits[0].oid and r.commit == repo.commits[1].oid
    assert r.plan.exists is False and r.plan.report_lines()[0].startswith(
        f"dataset repo {REPO} (new): ")
    assert r.url == f"{hub.url}/datasets/{REPO}/commit/{r.commit}"
    assert r.plan.counts()["unchanged"] == 0 and len(r.plan.changes) == len(r.plan.files)
    assert "\nlicense: apache-2.0\n" in hub.files(REPO)["README.md"].decode()    # the default


def test_private_default_comes_from_the_config(hub, tmp_path):
    (tmp_path / "config.toml").write_text("[hub]\nprivate = true\n")
    publish_catalog(build_catalog(tmp_path / "cat", counts=False), REPO, **FAST)
    publish_adapter(make_adapter(tmp_path / "ad", evals=False), "alice/ad", **FAST)
    assert hub.repo(REPO).private and hub.repo("alice/ad", "model").private


def test_an_existing_repo_is_not_created_again(hub, tmp_path):
    hub.add_repo(REPO)
    hub.fail("POST", r"/api/repos/create", 500, times=10)       # would fail if called
    r = publish_catalog(build_catalog(tmp_path / "cat", counts=False), REPO, **FAST)
    assert r.commit == hub.repo(REPO).head and r.plan.exists is True


def test_publish_passes_its_options_through(hub, tmp_path):
    cat = build_catalog(tmp_path / "cat", counts=False)
    r = publish_catalog(cat, REPO, message="my words", license="mit", **FAST)
    assert [c.summary for c in hub.repo(REPO).commits] == ["initial commit", "my words"]
    assert "license: mit" in hub.files(REPO)["README.md"].decode()
    assert r.plan.description == hub.repo(REPO).commits[-1].description
    folder = make_adapter(tmp_path / "ad", evals=False)
    r = publish_adapter(folder, "alice/ad", message="adapter words", license="mit", **FAST)
    assert hub.repo("alice/ad", "model").commits[-1].summary == "adapter words"
    assert "license: mit" in hub.files("alice/ad", "model")["README.md"].decode()


# -- publish_catalog / publish_adapter pass each option on -----------------------------------------
def _publish(target, tmp_path, repo=None, **kw):
    if target == "catalog":
        cat = build_catalog(tmp_path / "cat", counts=False)
        return publish_catalog(cat, repo or REPO, **kw)
    folder = tmp_path / "ad"
    if not (folder / "lape_adapter.json").exists():
        make_adapter(folder, evals=False)
    return publish_adapter(folder, repo or "alice/ad", **kw)


TARGETS = {"catalog": ("dataset", REPO, r"/api/datasets/alice/lape-catalog"),
           "adapter": ("model", "alice/ad", r"/api/models/alice/ad")}


@pytest.mark.parametrize("target", TARGETS)
def test_the_token_argument_and_its_absence(hub, tmp_path, monkeypatch, target):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match=r"no Hugging Face token: set HF_TOKEN \(a write token\)"):
        _publish(target, tmp_path)
    staged = _publish(target, tmp_path, dry_run=tmp_path / "stage")   # a dry run needs none
    assert staged.staged == tmp_path / "stage" and staged.plan.exists is False
    kind, repo, _ = TARGETS[target]
    assert (tmp_path / "stage" / ".lape-hub-staging").read_text() == \
        f"{kind} {repo} @ (new repo)\n"
    assert _publish(target, tmp_path, token=ALICE, **FAST).commit == hub.repo(repo, kind).head


@pytest.mark.parametrize("target", TARGETS)
def test_a_401_with_a_token_is_not_taken_for_a_missing_repo(hub, tmp_path, monkeypatch, target):
    """The Hub answers 401 RepoNotFound for a repo it hides: without a token (a dry run) the
    repo counts as new; with one, the publish stops instead of creating and committing."""
    import hub_server

    kind, repo, _ = TARGETS[target]
    hub.add_repo(repo, kind)

    def hidden(self, repo_type, repo_id, user, *, write=False):
        raise hub_server.HttpError(401, "Repository not found", "RepoNotFound")

    monkeypatch.setattr(hub_server._Handler, "_repo", hidden)
    with pytest.raises(HubError, match=rf"{kind} repo {repo} not found or private, and no "
                                       r"valid token was sent \(401\)") as e:
        _publish(target, tmp_path, **FAST)
    assert e.value.status == 401 and len(hub.repo(repo, kind).commits) == 1
    assert not any(m == "POST" for m, _, _ in hub.requests)
    # a dry run with that token stops too: a refusal is not "unreachable", nothing is staged
    with pytest.raises(HubError, match=r"not found or private, and no valid token"):
        _publish(target, tmp_path, dry_run=tmp_path / "refused", **FAST)
    assert not (tmp_path / "refused").exists()
    monkeypatch.delenv("HF_TOKEN")
    staged = _publish(target, tmp_path, dry_run=tmp_path / "stage")
    assert staged.plan.exists is False and staged.plan.parent is None


@pytest.mark.parametrize("target", TARGETS)
def test_errors_name_the_repo_kind(hub, tmp_path, target):
    kind, repo, _ = TARGETS[target]
    hub.echo = True
    hub.fail("POST", r"/api/repos/create", 400)
    with pytest.raises(HubError) as e:
        _publish(target, tmp_path, **FAST)
    assert _scrubbed(e.value).startswith(f"the Hub refused creating {kind} repo {repo} (HTTP "
                                         "400): ")


@pytest.mark.parametrize("target", TARGETS)
def test_retries_and_backoff_are_passed_on(hub, tmp_path, monkeypatch, target):
    waits = []
    monkeypatch.setattr(publisher.time, "sleep", waits.append)
    hub.fail("POST", r"/commit/", 503, times=1)
    with pytest.raises(HubError, match=r"HTTP 503"):
        _publish(target, tmp_path, retries=0, backoff=5.0)
    assert waits == []
    hub.fail("POST", r"/commit/", 503, times=2)
    assert _publish(target, tmp_path, retries=2, backoff=0.3).commit
    assert waits == [0.3, 0.6]


@pytest.mark.parametrize("target", TARGETS)
def test_private_is_passed_on(hub, tmp_path, target):
    kind, repo, _ = TARGETS[target]
    _publish(target, tmp_path, private=True, **FAST)
    assert hub.repo(repo, kind).private is True


def test_adapter_repo_from_the_namespace_and_the_catalog_repo_from_the_config(hub, tmp_path,
                                                                              monkeypatch):
    folder = make_adapter(tmp_path / "ad", evals=False)
    monkeypatch.setenv("LAPE_HUB_REPO", REPO)
    r = publish_adapter(folder, namespace="lape-org", **FAST)
    assert r.plan.repo_id == "lape-org/gemma-3-270m-npi_Deva-lape-sparse"
    card = hub.files(r.plan.repo_id, "model")["README.md"].decode()
    assert f"datasets/{REPO}" in card
    r = publish_adapter(folder, namespace="lape-org", catalog_repo="alice/other", **FAST)
    card = hub.files(r.plan.repo_id, "model")["README.md"].decode()
    assert "datasets/alice/other" in card and f"datasets/{REPO}" not in card


def test_adapter_prune_false_keeps_remote_only_files(hub, tmp_path):
    folder = make_adapter(tmp_path / "ad", evals=False)
    hub.add_repo("alice/ad", "model", files={"notes.md": b"kept"})
    r = publish_adapter(folder, "alice/ad", prune=False, **FAST)
    assert {c.path: c.status for c in r.plan.changes}["notes.md"] == "kept"
    assert hub.files("alice/ad", "model")["notes.md"] == b"kept"
    r = publish_adapter(folder, "alice/ad", **FAST)                    # the default prunes
    assert {c.path: c.status for c in r.plan.changes}["notes.md"] == "deleted"
    assert "notes.md" not in hub.files("alice/ad", "model")


def test_adapter_dry_run_folder_inside_the_catalog_is_refused(hub, tmp_path):
    from lape_hub.catalog import Catalog

    cat = build_catalog(tmp_path / "cat", counts=False)
    folder = make_adapter(tmp_path / "ad", evals=False)
    before = sorted(p.as_posix() for p in cat.root.rglob("*"))
    with pytest.raises(LapeHubError, match="catalog"):
        publish_adapter(folder, "alice/ad", catalog=Catalog(cat.root),
                        dry_run=cat.root / "stage")
    assert sorted(p.as_posix() for p in cat.root.rglob("*")) == before


def test_a_missing_merged_folder_is_made_from_the_adapter(hub, tmp_path, monkeypatch):
    import numpy as np
    from safetensors.numpy import save_file

    from lape_hub import sparse_adapter

    calls = []

    def fake_merge(adapter_dir, out):
        calls.append((Path(adapter_dir), Path(out)))
        Path(out).mkdir(parents=True)
        (Path(out) / "config.json").write_text("{}")
        save_file({"w": np.ones(2, np.float32)}, str(Path(out) / "model.safetensors"))

    monkeypatch.setattr(sparse_adapter, "merge_adapter", fake_merge)
    folder = make_adapter(tmp_path / "ad", evals=False)
    r = publish_adapter(folder, "alice/ad", merged=tmp_path / "merged", **FAST)
    assert calls == [(folder, tmp_path / "merged")]
    assert "merged/model.safetensors" in hub.files("alice/ad", "model") and r.commit
    assert r.plan.message == ("Add adapter gemma-3-270m · npi_Deva (lape-sparse) with the merged "
                              "model")


# -- what may be uploaded: content checks, the catalog and adapter folders ------------------------
def _content(tmp_path, name: str, data: bytes) -> str | None:
    p = tmp_path / name
    p.write_bytes(data)
    return content_problem(LocalFile(name, p))


def _safetensors(header: bytes, n: int | None = None, tail: bytes = b"") -> bytes:
    return (len(header) if n is None else n).to_bytes(8, "little") + header + tail


def test_content_problem_json(tmp_path, monkeypatch):
    assert _content(tmp_path, "merges.txt", b"\xff not checked") is None
    assert _content(tmp_path, "tokenizer.model", b"hf_token_copied_here") is None
    assert _content(tmp_path, "config.json", b'{"a": [1, 2]}') is None
    assert _content(tmp_path, "config.json", b'"just a string"') is None
    assert _content(tmp_path, "config.json", b"hf_abc") == "not valid JSON"
    assert _content(tmp_path, "config.json", b'{"a": "\xff"}') == "not valid JSON"
    assert _content(tmp_path, "config.json", b"[" * 100_000 + b"]" * 100_000) == \
        "not valid JSON"
    assert _content(tmp_path, "sub.json", b"") == "not valid JSON"
    monkeypatch.setattr(publisher, "_JSON_LIMIT", 10)
    assert _content(tmp_path, "a.json", b'"12345678"') is None               # exactly 10 bytes
    assert _content(tmp_path, "a.json", b'"123456789"') == "JSON file over 64 MiB"


def test_content_problem_safetensors(tmp_path):
    bad = "not a safetensors file"
    assert _content(tmp_path, "w.safetensors", _safetensors(b"{}")) is None    # n == 2 == size-8
    assert _content(tmp_path, "w.safetensors", _safetensors(b'{"a":1}', tail=b"\0" * 4)) is None
    assert _content(tmp_path, "w.safetensors", _safetensors(b"{}  ", n=2)) is None
    assert _content(tmp_path, "w.safetensors", _safetensors(b"{", n=1)) == bad
    assert _content(tmp_path, "w.safetensors", _safetensors(b"", n=0)) == bad
    assert _content(tmp_path, "w.safetensors", _safetensors(b"{}", n=3)) == bad   # past the end
    assert _content(tmp_path, "w.safetensors", _safetensors(b"[]")) == bad         # not a dict
    assert _content(tmp_path, "w.safetensors", _safetensors(b'"{}"')) == bad
    assert _content(tmp_path, "w.safetensors", _safetensors(b"{x}")) == bad
    assert _content(tmp_path, "w.safetensors", _safetensors(b'{"\xff":1}')) == bad
    assert _content(tmp_path, "w.safetensors", b"\x02\0\0\0\0\0\0") == bad          # 7 bytes
    assert _content(tmp_path, "w.safetensors", b"") == bad
    assert _content(tmp_path, "w.safetensors", b"hf_secret_token_value") == bad
    big = (100 << 20) + 1                      # a header length over 100 MiB, file long enough
    p = tmp_path / "big.safetensors"
    with open(p, "wb") as f:
        f.write(big.to_bytes(8, "little") + b"{}")
        f.truncate(big + 8)                    # sparse: no 100 MiB written
    assert content_problem(LocalFile("big.safetensors", p)) == bad


def test_catalog_data_files_lists_entries_manifest_and_schemas(tmp_path):
    from lape_hub.paths import schemas_dir

    cat = build_catalog(tmp_path / "cat")
    (cat.root / ".lock").write_text("")
    files = catalog_data_files(cat)
    entries = sorted(p.relative_to(cat.root).as_posix() for p in cat.root.rglob("data.parquet"))
    schemas = sorted(f"schemas/{p.name}" for p in schemas_dir().glob("*.json"))
    assert list(files) == sorted(["CATALOG.json", *entries, *schemas])
    assert len(entries) == 4 and schemas
    assert files["CATALOG.json"].source == cat.root / "CATALOG.json"
    assert files[schemas[0]].path == schemas[0]


def test_catalog_data_files_refuses_what_is_not_an_entry(tmp_path, monkeypatch):
    from lape_hub.catalog import Catalog
    from lape_hub.errors import NotInCatalogError, SchemaError

    with pytest.raises(NotInCatalogError, match="has no entries"):
        catalog_data_files(Catalog(tmp_path / "absent"))
    only_manifest = build_catalog(tmp_path / "m", counts=False)
    for p in sorted(only_manifest.root.rglob("*"), reverse=True):
        if p.name != "CATALOG.json":
            p.unlink() if p.is_file() else p.rmdir()
    with pytest.raises(NotInCatalogError, match="has no entries"):
        catalog_data_files(only_manifest)
    cat = build_catalog(tmp_path / "cat", counts=False)
    (cat.root / "notes.txt").write_text("x")
    with pytest.raises(LapeHubError) as e:
        catalog_data_files(cat)
    assert str(e.value) == (f"refused to publish catalog {cat.root}: it holds 1 entry lape-hub "
                            "does not publish: 'notes.txt' (not on the allow-list); remove it "
                            "(links, devices and pipes are never followed or sent)")
    (cat.root / "notes.txt").unlink()
    (cat.root / ".lock").write_text("")                 # the catalog's lock file is skipped
    assert ".lock" not in catalog_data_files(cat)
    import shutil

    from lape_hub import paths
    schemas = tmp_path / "schemas"
    shutil.copytree(paths.schemas_dir(), schemas)
    (schemas / "notes.txt").write_text("x")
    with monkeypatch.context() as m:
        m.setattr(paths, "schemas_dir", lambda: schemas)
        with pytest.raises(LapeHubError, match=rf"^refused to publish schemas folder {schemas}: "
                                               r"it holds 1 entry .*'notes.txt'"):
            catalog_data_files(cat)
    (cat.root / ".lock").unlink()
    (cat.root / "CATALOG.json").write_text('{"format": "lape-hub-catalog", "schema_version": 99}')
    with pytest.raises(SchemaError, match=f"catalog {cat.root} has schema version 99"):
        catalog_data_files(cat)
    cat = build_catalog(tmp_path / "c2", counts=False)
    entry = next(cat.root.rglob("data.parquet"))
    import pyarrow as pa
    import pyarrow.parquet as pq
    entry.unlink()
    pq.write_table(pa.table({"x": [1]}), entry)
    with pytest.raises(SchemaError, match="does not match"):
        catalog_data_files(cat)


def test_adapter_files_allow_list_card_and_merged(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    folder = make_adapter(tmp_path / "ad")
    (folder / "README.md").write_text("old card")
    files = adapter_files(folder)
    assert sorted(files) == ["eval_results.json", "lape_adapter.json",
                             "lape_adapter.safetensors"]
    assert files["lape_adapter.json"].source == folder / "lape_adapter.json"
    merged = folder / "merged"                    # inside the adapter folder: its own walk
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    for name in ("model.safetensors", "model-00001-of-00002.safetensors"):
        save_file({"w": np.ones(2, np.float32)}, str(merged / name))
    with pytest.raises(LapeHubError, match="merged"):        # without merged=: a stray folder
        adapter_files(folder)
    files = adapter_files(folder, merged)
    assert sorted(files) == ["eval_results.json", "lape_adapter.json",
                             "lape_adapter.safetensors", "merged/config.json",
                             "merged/model-00001-of-00002.safetensors",
                             "merged/model.safetensors"]
    assert files["merged/config.json"].path == "merged/config.json"
    for stray in ("model-1-of-2.safetensors", "xmodel.safetensors", "README.md"):
        (merged / stray).write_bytes(b"x")
        with pytest.raises(LapeHubError, match=rf"merged model folder .*'{stray}' \(not on"):
            adapter_files(folder, merged)
        (merged / stray).unlink()
    (merged / "tokenizer.json").write_text("hf_not_json")
    with pytest.raises(LapeHubError, match=r"'tokenizer.json' \(not valid JSON\)"):
        adapter_files(folder, merged)
    (merged / "tokenizer.json").unlink()
    (folder / "adapter_config.json").write_text("hf_not_json")
    with pytest.raises(LapeHubError, match=r"adapter folder .*'adapter_config.json' \(not valid"):
        adapter_files(folder, merged)
    (folder / "adapter_config.json").unlink()
    outside = tmp_path / "outside"
    merged.rename(outside)
    assert sorted(adapter_files(folder, outside))[-1] == "merged/model.safetensors"
    (folder / "notes.txt").write_text("x")
    with pytest.raises(LapeHubError, match=r"adapter folder .*'notes.txt' \(not on"):
        adapter_files(folder, outside)


def test_inside():
    here = Path.cwd()
    assert publisher._inside(here / "a" / "b", here) and publisher._inside(here, here)
    assert not publisher._inside(here.parent, here)
    assert not publisher._inside(here.parent / (here.name + "x"), here)


# -- commit messages, descriptions, evaluations, adapter repos -------------------------------------
NEU = "neurons/model={m}/refset=paper-12/selection=s/data.parquet"
CNT = "activation_counts/model={m}/revision=main/corpus=c/lang={lang}/data.parquet"


def test_catalog_commit_message():
    msg = publisher.catalog_commit_message
    assert msg([], {}) == "Update dataset card and schemas"
    assert msg([Change("README.md", "changed"), Change("schemas/neurons.json", "added")], {}) \
        == "Update dataset card and schemas"
    assert msg([Change(NEU.format(m="a"), "deleted")], {}) == "Remove 1 catalog file"
    assert msg([Change(NEU.format(m="a"), "deleted"), Change("README.md", "deleted"),
                Change("README.md", "changed")], {}) == "Remove 2 catalog files"
    n1, n2 = NEU.format(m="m1"), NEU.format(m="m2")
    c1, c2 = CNT.format(m="m1", lang="isl_Latn"), CNT.format(m="m1", lang="afr_Latn")
    new = {n1: {"npi_Deva", "mlt_Latn"}, n2: set(), c1: {"ignored"}}
    assert msg([Change(n1, "added"), Change(c1, "added"), Change(c2, "added"),
                Change(n2, "added"), Change("README.md", "changed")], new) == \
        "Add m1 · 4 languages, m2 (activation_counts, neurons)"
    assert msg([Change(c1, "changed"), Change(n1, "added")], new) == \
        "Update m1 · 3 languages (activation_counts, neurons)"
    assert msg([Change(c1, "added"), Change(n2, "deleted")], new) == \
        "Add m1 · 1 language (activation_counts); remove 1 file"
    assert msg([Change(n1, "changed"), Change(n2, "deleted"), Change(c2, "deleted")], {}) == \
        "Update m1 (neurons); remove 2 files"


def test_description_lists_pending_changes_up_to_the_limit():
    from lape_hub import __version__

    changes = [Change("a", "added"), Change("b", "unchanged"), Change("c", "changed", 1, "n"),
               Change("d", "deleted"), Change("e", "kept"), Change("f", "skipped", 1, "x")]
    tail = ["", f"Published with lape-hub {__version__}."]
    assert publisher._description(changes).split("\n") == [
        "added: a", "changed: c (n)", "deleted: d", *tail]
    assert publisher._description(changes, limit=2).split("\n") == [
        "added: a", "changed: c (n)", "... and 1 more", *tail]
    assert publisher._description(changes, limit=3).split("\n") == [
        "added: a", "changed: c (n)", "deleted: d", *tail]
    many = [Change(f"p{i:03}", "added") for i in range(203)]
    lines = publisher._description(many).split("\n")
    assert lines[199] == "added: p199" and lines[200] == "... and 3 more" and len(lines) == 203


def test_evaluation_rows(tmp_path):
    from lape_hub.cards import Evaluation

    where = tmp_path / "eval_results.json"
    ev = publisher._evaluation
    assert ev({"dataset": "flores", "metric": "chrf", "value": "31.5"}, where) == Evaluation(
        "text-generation", "flores", "chrf", 31.5)
    assert ev({"task": "qa", "dataset": 1, "metric": 2, "value": 3, "split": "dev",
               "lang": "mlt_Latn", "name": "N", "signature": "S"}, where) == Evaluation(
        "qa", "1", "2", 3.0, split="dev", config="mlt_Latn", name="N", signature="S")
    assert ev({"task": "", "dataset": "d", "metric": "m", "value": 1, "config": "c",
               "lang": "l", "signature": None}, where) == Evaluation(
        "text-generation", "d", "m", 1.0, config="c")
    for bad in ({"metric": "m", "value": 1}, {"dataset": "d", "value": 1},
                {"dataset": "d", "metric": "m"}, {"dataset": "d", "metric": "m", "value": "x"},
                {"dataset": "d", "metric": "m", "value": None}, ["not", "a", "dict"], 7):
        with pytest.raises(LapeHubError) as e:
            ev(bad, where)
        assert str(e.value) == (f"{where}: an evaluation needs dataset, metric and value "
                                f"(got {bad!r:.120})")


def test_load_evaluations_from_the_config_the_catalog_and_the_results_file(tmp_path):
    import json
    import math

    from lape_hub.cards import AdapterInfo, Evaluation

    folder = make_adapter(tmp_path / "ad")
    info = AdapterInfo.from_dir(folder)
    sig = info.signature
    loss = [Evaluation("text-generation", "sib200:train", "loss", 2.5, split="validation",
                       config="npi_Deva", name="validation loss (nats/token)", signature=sig),
            Evaluation("text-generation", "sib200:train", "perplexity", math.exp(2.5),
                       split="validation", config="npi_Deva", name="validation perplexity",
                       signature=sig)]
    chrf = Evaluation("text-generation", "flores200", "chrf", 31.5, split="devtest",
                      signature="chrf|flores200|v:0.1.0")
    assert publisher.load_evaluations(info, None) == [*loss, chrf]
    (folder / "eval_results.json").write_text(json.dumps(
        {"dataset": "d", "metric": "m", "value": 1}))                      # one object, no list
    assert publisher.load_evaluations(info, None)[2:] == [Evaluation("text-generation", "d",
                                                                     "m", 1.0)]
    (folder / "eval_results.json").write_text("{not json")
    with pytest.raises(LapeHubError, match=r"eval_results.json: not valid JSON \("):
        publisher.load_evaluations(info, None)
    (folder / "eval_results.json").unlink()
    cfg = json.loads((folder / "lape_adapter.json").read_text())
    for value in (float("nan"), "2.5", None, True):
        cfg.update(best_val_loss=value, corpus="")
        (folder / "lape_adapter.json").write_text(json.dumps(cfg))
        got = publisher.load_evaluations(AdapterInfo.from_dir(folder), None)
        assert got == ([Evaluation("text-generation", "validation set", "loss", 1.0,
                                   split="validation", config="npi_Deva",
                                   name="validation loss (nats/token)", signature=sig),
                        Evaluation("text-generation", "validation set", "perplexity",
                                   math.e, split="validation", config="npi_Deva",
                                   name="validation perplexity", signature=sig)]
                       if value is True else []), value
    cfg.update(best_val_loss=3)
    (folder / "lape_adapter.json").write_text(json.dumps(cfg))
    got = publisher.load_evaluations(AdapterInfo.from_dir(folder), None)
    assert [(e.dataset, e.metric, e.value) for e in got] == [
        ("validation set", "loss", 3.0), ("validation set", "perplexity", math.exp(3))]


def test_adapter_row_matches_the_artifact_then_the_latest_signature(tmp_path):
    from datetime import datetime, timedelta, timezone

    import pyarrow as pa
    from test_publisher import add_adapter_row

    from lape_hub.cards import AdapterInfo
    from lape_hub.schemas import table_schema

    cat = build_catalog(tmp_path / "cat", counts=False)
    folder = make_adapter(tmp_path / "ad", catalog=cat)
    info = AdapterInfo.from_dir(folder)
    assert publisher.adapter_row(info, None) is None
    assert publisher.adapter_row(info, cat) is None                     # no adapters table rows
    add_adapter_row(cat, folder, best_val_loss=2.0)
    row = publisher.adapter_row(info, cat)
    assert row["best_val_loss"] == 2.0
    # the folder changes: no digest matches; the latest row of the same signature is taken
    (folder / "eval_results.json").write_text("[]")
    schema = table_schema("adapters")
    base = dict(row)
    t0 = datetime.now(timezone.utc) + timedelta(days=1)       # after the first row
    rows = [dict(base, run_id="aaaaaaaaaaaa", best_val_loss=3.0, created_at=t0 + timedelta(1),
                 artifact_sha256="0" * 64),
            dict(base, run_id="bbbbbbbbbbbb", best_val_loss=4.0, created_at=t0,
                 artifact_sha256="1" * 64),
            dict(base, run_id="cccccccccccc", best_val_loss=5.0, created_at=t0 + timedelta(9),
                 artifact_sha256="2" * 64, signature="another")]
    for r in rows:
        cat.write("adapters", pa.Table.from_pylist([r], schema=schema.arrow))
    assert publisher.adapter_row(info, cat)["best_val_loss"] == 3.0
    assert publisher.load_evaluations(info, cat)[0].value == 3.0
    unsigned = AdapterInfo(**{**info.__dict__, "signature": ""})
    assert publisher.adapter_row(unsigned, cat) is None


def test_adapter_repo_id_sources(tmp_path, monkeypatch):
    import json

    from lape_hub.cards import AdapterInfo

    for var in ("LAPE_HUB_REPO",):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAPE_HUB_CONFIG", str(tmp_path / "config.toml"))
    folder = make_adapter(tmp_path / "ad", evals=False)
    info = AdapterInfo.from_dir(folder)
    rid = publisher.adapter_repo_id
    assert rid(info, "org/x") == "org/x"
    with pytest.raises(LapeHubError):
        rid(info, "not a repo id")
    with pytest.raises(HubError, match=r"no repo for adapter .*: pass --hub-repo ORG/NAME or "
                                       "--namespace ORG"):
        rid(info)
    assert rid(info, None, "ns") == "ns/gemma-3-270m-npi_Deva-lape-sparse"
    monkeypatch.setenv("LAPE_HUB_REPO", "cat-org/catalog")
    assert rid(info) == "cat-org/gemma-3-270m-npi_Deva-lape-sparse"
    (tmp_path / "config.toml").write_text('[hub]\nadapter_namespace = "cfg-org"\n')
    assert rid(info) == "cfg-org/gemma-3-270m-npi_Deva-lape-sparse"
    assert rid(info, None, "ns") == "ns/gemma-3-270m-npi_Deva-lape-sparse"
    cfg = json.loads((folder / "lape_adapter.json").read_text())
    (folder / "lape_adapter.json").write_text(json.dumps(dict(cfg, hub_repo="own/repo")))
    assert rid(AdapterInfo.from_dir(folder), None, "ns") == "own/repo"
    assert rid(AdapterInfo.from_dir(folder), "org/x") == "org/x"
    (folder / "lape_adapter.json").write_text(json.dumps(dict(cfg, hub_repo="bad id!")))
    with pytest.raises(LapeHubError, match="lape_adapter.json"):
        rid(AdapterInfo.from_dir(folder))
    (folder / "lape_adapter.json").write_text(json.dumps(dict(cfg, hub_repo=7)))
    assert rid(AdapterInfo.from_dir(folder), None, "ns") == "ns/gemma-3-270m-npi_Deva-lape-sparse"


def test_find_adapters(tmp_path):
    with pytest.raises(LapeHubError, match=f"adapters folder {tmp_path / 'none'} does not exist"):
        publisher.find_adapters(tmp_path / "none")
    a = make_adapter(tmp_path / "all" / "b" / "npi", evals=False)
    b = make_adapter(tmp_path / "all" / "a", evals=False)
    merged = make_adapter(tmp_path / "all" / "merged", evals=False)
    (merged / "config.json").write_text("{}")
    make_adapter(tmp_path / "all" / ".hidden" / "x", evals=False)
    assert publisher.find_adapters(tmp_path / "all") == [b, a]
    assert publisher.find_adapters(tmp_path / "all" / ".hidden") == [tmp_path / "all" / ".hidden"
                                                                     / "x"]


def test_merged_dir(tmp_path, monkeypatch):
    from lape_hub import sparse_adapter

    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    monkeypatch.setattr(sparse_adapter, "merge_adapter", lambda *a: pytest.fail("no merge"))
    assert publisher._merged_dir(tmp_path, full) == full
    calls = []
    monkeypatch.setattr(sparse_adapter, "merge_adapter", lambda a, o: calls.append((a, o)))
    (tmp_path / "empty").mkdir()
    assert publisher._merged_dir(tmp_path / "ad", str(tmp_path / "empty")) == tmp_path / "empty"
    assert calls == [(tmp_path / "ad", tmp_path / "empty")]
    monkeypatch.delattr(sparse_adapter, "merge_adapter")
    with pytest.raises(LapeHubError) as e:
        publisher._merged_dir(tmp_path / "ad", tmp_path / "new")
    assert str(e.value) == (f"no merged model in {tmp_path / 'new'}: make it with `lape-hub "
                            f"merge {tmp_path / 'ad'} -o {tmp_path / 'new'}`")


def test_publish_missing_stages_each_repo_in_its_own_folder(hub, tmp_path, monkeypatch):
    cat = build_catalog(tmp_path / "cat")
    make_adapter(tmp_path / "ads" / "npi", catalog=cat, evals=False)
    stage = tmp_path / "stage"
    results = publisher.publish_missing(cat.root, REPO, adapters=tmp_path / "ads",
                                        dry_run=stage, token=None)
    target = "alice/gemma-3-270m-npi_Deva-lape-sparse"
    assert [r.plan.repo_id for r in results] == [REPO, target]
    assert [r.staged for r in results] == [stage / "catalog",
                                           stage / "alice--gemma-3-270m-npi_Deva-lape-sparse"]
    assert not hub.repos
    results = publisher.publish_missing(cat.root, REPO, adapters=tmp_path / "ads",
                                        namespace="lape-org", private=True, **FAST)
    assert [r.plan.repo_id for r in results] == [REPO, "lape-org/gemma-3-270m-npi_Deva-lape-sparse"]
    assert all(r.commit for r in results) and hub.repo(REPO).private
    card = hub.files(results[1].plan.repo_id, "model")["README.md"].decode()
    assert f"datasets/{REPO}" in card
    (tmp_path / "config.toml").write_text('[hub]\nadapter_namespace = "alice"\n')
    make_adapter(tmp_path / "ads" / "mlt", "mlt_Latn", evals=False)
    hub.fail("POST", r"/commit/", 503, times=1)
    with pytest.raises(HubError, match=r"HTTP 503\) while committing to model repo "
                                       "alice/gemma-3-270m-mlt_Latn-lape-sparse"):
        publisher.publish_missing(cat.root, REPO, adapters=tmp_path / "ads", retries=0)
    results = publisher.publish_missing(cat.root, REPO, adapters=tmp_path / "ads", retries=0)
    assert [r.commit is None for r in results] == [True, False, False]   # catalog up to date
    assert [r.plan.repo_id for r in results][1:] == [
        "alice/gemma-3-270m-mlt_Latn-lape-sparse", target]
    assert publisher.publish_missing(cat.root, REPO)[0].commit is None     # no adapters: catalog


def test_publish_missing_asks_each_publish_for_what_is_missing_with_every_option(
        hub, tmp_path, monkeypatch):
    cat = build_catalog(tmp_path / "cat")
    make_adapter(tmp_path / "ads" / "npi", catalog=cat, evals=False)
    calls = []
    monkeypatch.setattr(publisher, "publish_catalog",
                        lambda *a, **kw: calls.append(("catalog", a, kw)) or "c")
    monkeypatch.setattr(publisher, "publish_adapter",
                        lambda *a, **kw: calls.append(("adapter", a, kw)) or "a")
    out = publisher.publish_missing(cat.root, REPO, adapters=tmp_path / "ads", dry_run=None,
                                    token="hf_x", private=True, retries=3, backoff=0.5)
    assert out == ["c", "a"]
    (k1, a1, kw1), (k2, a2, kw2) = calls
    same = dict(missing_only=True, token="hf_x", private=True, retries=3, backoff=0.5,
                dry_run=None)
    assert (k1, a1, kw1) == ("catalog", (cat.root, REPO), same)
    assert (k2, a2[1]) == ("adapter", "alice/gemma-3-270m-npi_Deva-lape-sparse")
    assert kw2 == dict(same, catalog=cat.root, catalog_repo=REPO)
    with pytest.raises(LapeHubError, match="catalog"):      # a stage inside the catalog
        publisher.publish_missing(cat.root, REPO, dry_run=cat.root / "stage")


def test_missing_only_adapter_is_left_alone_only_when_weights_are_there(hub, tmp_path):
    folder = make_adapter(tmp_path / "ad", evals=False)
    hub.add_repo("alice/ad", "model", files={"notes.md": b"x"})
    r = publish_adapter(folder, "alice/ad", missing_only=True, prune=False, **FAST)
    assert r.commit and {c.path: c.status for c in r.plan.changes} == {
        "lape_adapter.json": "added", "lape_adapter.safetensors": "added",
        "README.md": "added", "notes.md": "kept"}
    assert r.plan.message == "Add adapter gemma-3-270m · npi_Deva (lape-sparse)"
    (folder / "lape_adapter.json").write_text(
        (folder / "lape_adapter.json").read_text().replace("200", "300"))
    r = publish_adapter(folder, "alice/ad", missing_only=True, prune=False, **FAST)
    assert r.commit is None
    assert {c.path: (c.status, c.note) for c in r.plan.changes} == {
        "lape_adapter.json": ("skipped", "the remote has this adapter"),
        "README.md": ("skipped", "the remote has this adapter"),
        "lape_adapter.safetensors": ("unchanged", ""), "notes.md": ("kept", "")}
    r = publish_adapter(folder, "alice/ad", prune=False, **FAST)
    assert r.plan.message == "Update adapter gemma-3-270m · npi_Deva (lape-sparse)"
    assert r.plan.description.startswith("changed: README.md\nchanged: lape_adapter.json\n")
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"other": np.zeros(3, np.float32)}, str(folder / "lape_adapter.safetensors"))
    r = publish_adapter(folder, "alice/ad", missing_only=True, **FAST)    # other weights there
    assert r.commit is None
    assert {c.path: c.status for c in r.plan.changes} == {
        "lape_adapter.json": "unchanged", "lape_adapter.safetensors": "skipped",
        "README.md": "unchanged", "notes.md": "skipped"}


# -- the adapter plan: the card's neuron set and evaluations, the defaults -------------------------
def _adapter_for(folder, cat, lang="npi_Deva", **cfg_extra):
    """An adapter folder whose lape_adapter.json names the neuron set ``cfg_extra`` picks."""
    import json

    make_adapter(folder, lang, evals=False)
    cfg = json.loads((folder / "lape_adapter.json").read_text())
    ns = cat.neuron_set("gemma-3-270m", lang, refset=cfg_extra.get("refset"),
                        selection=cfg_extra.get("selection"))
    cfg.update(cfg_extra, neuron_set_hash=ns.content_hash)
    (folder / "lape_adapter.json").write_text(json.dumps(cfg))
    return folder


def _card(plan) -> str:
    return plan.files["README.md"].source.decode()


def test_adapter_card_shows_the_neuron_set_the_adapter_names(tmp_path, monkeypatch):
    import hub_server

    from lape_hub.cards import AdapterInfo
    from lape_hub.registry import resolve_model

    root = tmp_path / "cat"
    build_catalog(root, counts=False)                                   # paper-12, default: 3
    build_catalog(root, refset="custom", per_layer=2, counts=False)     # another reference set
    monkeypatch.setattr(hub_server, "SELECTION", "top0.02-f0.95-b0.95")
    cat = build_catalog(root, per_layer=1, counts=False)                # another selection
    n = resolve_model("gemma-3-270m").n_layers
    cases = {"default": ({}, "3"), "mlt": ({}, "3"), "refset": ({"refset": "custom"}, "2"),
             "selection": ({"selection": "top0.02-f0.95-b0.95"}, "1")}
    for name, (extra, per) in cases.items():
        lang = "mlt_Latn" if name == "mlt" else "npi_Deva"
        info = AdapterInfo.from_dir(_adapter_for(tmp_path / name, cat, lang, **extra))
        card = _card(plan_adapter(info, "alice/ad", RemoteState(False), catalog=cat))
        assert f"| per layer | {' '.join([per] * n)} |" in card, name
        assert f"| neurons | {int(per) * n:,} |" in card, name
    info = AdapterInfo.from_dir(tmp_path / "default")
    assert "| per layer |" not in _card(plan_adapter(info, "alice/ad", RemoteState(False)))


def test_adapter_card_names_its_repo_and_its_own_evaluations(tmp_path):
    from test_evaluation_cards import ROWS, _full

    from lape_hub.cards import AdapterInfo
    from lape_hub.digest import artifact_sha256
    from lape_hub.evaluation.results import record_evals

    cat = build_catalog(tmp_path / "cat", counts=False)
    folder = make_adapter(tmp_path / "ad", "mlt_Latn", evals=False)
    run_id = artifact_sha256(folder)[:12]
    rows = [dict(r, run_id=run_id if r["run_id"] == "abc123def456" else r["run_id"])
            for r in ROWS]
    decoys = [dict(rows[1], lang="afr_Latn", metric="decoy-lang", direction="afr_Latn->eng_Latn"),
              dict(rows[1], model="other-model", metric="decoy-model")]
    record_evals(_full(rows + decoys), cat)
    info = AdapterInfo.from_dir(folder)
    card = _card(plan_adapter(info, "alice/the-repo", RemoteState(False), catalog=cat))
    assert "## Comparison" in card and "chrf++" in card and "alice/the-repo" in card
    assert "decoy" not in card
    head = card.split("---\n")[1]
    assert "value: 23.4" in head                                  # this adapter's own row


def test_plan_adapter_defaults_mirror_the_folder(tmp_path):
    from lape_hub.cards import AdapterInfo

    folder = make_adapter(tmp_path / "ad", evals=False)
    weights = (folder / "lape_adapter.safetensors").read_bytes()
    remote = RemoteState(True, "a" * 40, {
        "lape_adapter.safetensors": _remote("lape_adapter.safetensors", weights),
        "lape_adapter.json": _remote("lape_adapter.json", b"{}", lfs=False),
        "notes.md": _remote("notes.md", b"x", lfs=False),
        ".gitattributes": _remote(".gitattributes", b"*.bin lfs", lfs=False)})
    plan = plan_adapter(AdapterInfo.from_dir(folder), "alice/ad", remote)
    assert {c.path: c.status for c in plan.changes} == {
        "lape_adapter.safetensors": "unchanged", "lape_adapter.json": "changed",
        "README.md": "added", "notes.md": "deleted"}
    assert plan.parent == "a" * 40 and plan.exists and plan.repo_type == "model"
    assert plan.message == "Update adapter gemma-3-270m · npi_Deva (lape-sparse)"


# -- the catalog plan: what is kept, pruned, skipped, refused --------------------------------------
NEURONS = "neurons/model=gemma-3-270m/refset=paper-12/selection=top0.05-f0.95-b0.95/data.parquet"
ISL_COUNTS = "activation_counts/model=gemma-3-270m/revision=main/corpus=test/lang=isl_Latn/" \
             "data.parquet"


def _card_langs(readme: bytes) -> list[str]:
    import yaml

    return yaml.safe_load(readme.decode().split("---\n")[1])["language"]


def test_catalog_plan_keeps_or_prunes_remote_only_files(hub, tmp_path):
    publish_catalog(build_catalog(tmp_path / "a"), REPO, **FAST)
    isl = build_catalog(tmp_path / "isl", ("isl_Latn",)).root / ISL_COUNTS
    hub.push_files(REPO, {ISL_COUNTS: isl.read_bytes(), "notes.txt": b"mine",
                          "schemas/old.json": b"{}"})
    local = build_catalog(tmp_path / "b", counts=False)
    kept = publish_catalog(local, REPO, dry_run=tmp_path / "s1")
    status = {c.path: c.status for c in kept.plan.changes}
    assert status[ISL_COUNTS] == "kept" and status["schemas/old.json"] == "kept"
    assert "notes.txt" not in status and ".gitattributes" not in status
    assert status[NEURONS] == "changed" and status["CATALOG.json"] == "unchanged"
    assert "is" in _card_langs((tmp_path / "s1" / "README.md").read_bytes())
    pruned = publish_catalog(local, REPO, prune=True, dry_run=tmp_path / "s2")
    status = {c.path: c.status for c in pruned.plan.changes}
    assert status[ISL_COUNTS] == "deleted" and status["schemas/old.json"] == "deleted"
    assert "notes.txt" not in status and status["CATALOG.json"] == "unchanged"
    assert sum(s == "deleted" for s in status.values()) == 5          # 4 counts + old schema
    assert "is" not in _card_langs((tmp_path / "s2" / "README.md").read_bytes())
    hub.push_files(REPO, {"README.md": None})
    again = publish_catalog(local, REPO, prune=True, dry_run=tmp_path / "s3")
    assert {c.path: c.status for c in again.plan.changes}["README.md"] == "added"


def test_catalog_plan_refuses_a_damaged_remote_copy_naming_the_head(hub, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    local = build_catalog(tmp_path / "local", counts=False)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"lang": ["npi_Deva"], "x": [1]}), sink)
    hub.add_repo(REPO, files={NEURONS: sink.getvalue().to_pybytes()})
    head = hub.repo(REPO).head
    with pytest.raises(LapeHubError) as e:
        publish_catalog(local, REPO, dry_run=tmp_path / "s")
    text = str(e.value)
    assert text.startswith(f"dataset repo {REPO}@{head[:12]}: the remote copy of {NEURONS} is "
                           "damaged or foreign (it does not match schema"), text
    assert text.endswith("); publish with --force to replace it with the local copy"), text
    assert "lape-hub-remote-" not in text and str(tmp_path) not in text
    forced = publish_catalog(local, REPO, force=True, dry_run=tmp_path / "s")
    assert {c.path: c.status for c in forced.plan.changes}[NEURONS] == "changed"
    assert forced.plan.message == "Update gemma-3-270m (neurons)"   # no languages known to add


def test_catalog_plan_names_the_languages_it_would_drop(hub, tmp_path):
    langs = ("afr_Latn", "isl_Latn", "mlt_Latn", "npi_Deva", "swh_Latn", "zul_Latn", "deu_Latn")
    publish_catalog(build_catalog(tmp_path / "a", langs, counts=False), REPO, **FAST)
    hub.repo(REPO).private = True                  # the remote copy is read with the token
    with pytest.raises(HubError) as e:
        publish_catalog(build_catalog(tmp_path / "b", ("npi_Deva",), counts=False), REPO,
                        dry_run=tmp_path / "s")
    assert str(e.value) == (
        f"publishing {NEURONS} would drop 6 language(s) the remote has (afr_Latn, deu_Latn, "
        "isl_Latn, mlt_Latn, swh_Latn): fetch the remote catalog into the local one first, or "
        "publish with --force")


def test_catalog_plan_missing_only_notes_and_new_languages(hub, tmp_path):
    publish_catalog(build_catalog(tmp_path / "a"), REPO, **FAST)
    hub.requests.clear()
    same = publish_catalog(build_catalog(tmp_path / "b"), REPO, missing_only=True,
                           dry_run=tmp_path / "s1")
    downloads = [p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]
    assert [p.split("/resolve/")[1].split("/", 1)[1] for p in downloads] == [
        "CATALOG.json", NEURONS]          # a lang= partition's languages come from its path
    notes = {c.path.split("/")[0]: (c.status, c.note) for c in same.plan.changes
             if c.status == "skipped"}
    assert notes == {"neurons": ("skipped", "the remote already has its languages"),
                     "activation_counts": ("skipped", "the remote already has this entry"),
                     "README.md": ("skipped", "nothing missing")}
    assert not same.plan.pending
    more = build_catalog(tmp_path / "c", ("npi_Deva", "mlt_Latn", "afr_Latn", "isl_Latn"),
                         counts=False)
    r = publish_catalog(more, REPO, missing_only=True, dry_run=tmp_path / "s2")
    assert {c.path: c.status for c in r.plan.pending} == {NEURONS: "changed",
                                                          "README.md": "changed"}
    assert r.plan.message == "Update gemma-3-270m · 1 language (neurons)"
    full = publish_catalog(more, REPO, dry_run=tmp_path / "s3")
    assert full.plan.message == "Update gemma-3-270m · 1 language (neurons)"


def test_catalog_plan_reads_whole_every_file_it_uploads(hub, tmp_path):
    from lape_hub.errors import SchemaError

    cat = build_catalog(tmp_path / "cat", counts=False)
    publish_catalog(cat, REPO, **FAST)
    p = cat.root / NEURONS
    good = p.read_bytes()
    data = bytearray(good)
    data[8:400] = bytes(b ^ 0x5A for b in data[8:400])    # the footer intact, the pages not
    p.write_bytes(bytes(data))
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pytest.raises((pa.ArrowException, OSError)) as arrow:   # what pyarrow itself says
        pq.ParquetFile(p).read_row_group(0)
    first = str(arrow.value).strip().splitlines()[0]
    with pytest.raises(SchemaError) as e:
        publish_catalog(cat, REPO, dry_run=tmp_path / "s")
    assert str(e.value) == f"corrupt Parquet file {p}: {first}"
    hub.push_files(REPO, {NEURONS: bytes(data)})             # the remote has the same bytes
    r = publish_catalog(cat, REPO, dry_run=tmp_path / "s")    # unchanged: not uploaded, not read
    assert {c.path: c.status for c in r.plan.changes}[NEURONS] == "unchanged"


def test_catalog_plan_checks_the_remote_manifest_against_its_listing(hub, tmp_path):
    cat = build_catalog(tmp_path / "cat", counts=False)
    hub.add_repo(REPO, files={"CATALOG.json": b'{"format": "lape-hub-catalog", '
                                              b'"schema_version": 99}'})
    with pytest.raises(LapeHubError) as e:
        publish_catalog(cat, REPO, dry_run=tmp_path / "s")
    assert str(e.value) == (f"dataset repo {REPO} has schema version 99, newer than this "
                            "lape-hub's 1: upgrade lape-hub before publishing to it")
    hub.push_files(REPO, {"CATALOG.json": (cat.root / "CATALOG.json").read_bytes()})
    assert publish_catalog(cat, REPO, dry_run=tmp_path / "s").plan.counts()["unchanged"] >= 1
    hub.tree_hook = lambda listing: [dict(e, oid="0" * 40) if e["path"] == "CATALOG.json"
                                     else e for e in listing]
    with pytest.raises(LapeHubError, match="CATALOG.json"):
        publish_catalog(cat, REPO, dry_run=tmp_path / "s")


def test_ensure_repo_creates_idempotently_and_scrubs_its_errors():
    calls = []

    class Api:
        def create_repo(self, repo_id, **kw):
            calls.append((repo_id, kw))
            if len(calls) > 1:
                raise _Status(400, f"no, {ALICE}")

    publisher._ensure_repo(Api(), "alice/x", "model", private=True, token=ALICE)
    assert calls == [("alice/x", {"repo_type": "model", "private": True, "exist_ok": True})]
    with pytest.raises(HubError) as e:
        publisher._ensure_repo(Api(), "alice/x", "dataset", private=False, token=ALICE)
    assert str(e.value) == "creating dataset repo alice/x failed: _Status: no, hf_***"


def test_plan_catalog_defaults_publish_what_changed(hub, tmp_path):
    from lape_hub.config import hub_api

    publish_catalog(build_catalog(tmp_path / "a"), REPO, **FAST)
    api = hub_api(ALICE)
    remote = remote_state(api, REPO, "dataset", token=ALICE)
    local = build_catalog(tmp_path / "b", counts=False)          # same languages, new bytes
    plan = publisher.plan_catalog(api, local, REPO, remote, token=ALICE)
    status = {c.path: c.status for c in plan.changes}
    assert status[NEURONS] == "changed" and status["README.md"] == "changed"
    assert sum(s == "kept" for s in status.values()) == 3       # no prune by default
    assert plan.message == "Update gemma-3-270m (neurons)" and plan.repo_type == "dataset"
    assert "license: apache-2.0" in plan.files["README.md"].source.decode()
    fresh = publisher.plan_catalog(api, local, "alice/new", RemoteState(False), token=ALICE)
    assert fresh.message == "Add gemma-3-270m · 3 languages (neurons)"
    fewer = build_catalog(tmp_path / "c", ("npi_Deva",), counts=False)
    with pytest.raises(HubError, match="would drop 2 language"):      # no force by default
        publisher.plan_catalog(api, fewer, REPO, remote, token=ALICE)


def test_catalog_plan_checks_a_downloaded_copy_against_its_listing(hub, tmp_path):
    publish_catalog(build_catalog(tmp_path / "a"), REPO, **FAST)
    hub.tree_hook = lambda listing: [
        dict(e, lfs=dict(e["lfs"], oid="0" * 64)) if e["path"] == NEURONS else e
        for e in listing]
    with pytest.raises(LapeHubError, match="data.parquet") as e:
        publish_catalog(build_catalog(tmp_path / "b"), REPO, dry_run=tmp_path / "s")
    assert "would drop" not in str(e.value)


# -- which catalog row an adapter folder is: its keys, then its digest, then its signature --------
def _folder_sha256(folder: Path) -> str:
    """The ``artifact_sha256`` of a folder as the adapters schema describes it (sorted
    ``path NUL sha256`` lines), computed here with hashlib."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(folder).as_posix()}\0"
                 f"{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _write_adapter_rows(cat, folder: Path, *rows: dict) -> None:
    """One ``adapters`` entry per row: the folder's config fields, then the row's own."""
    import json
    from datetime import datetime, timezone

    import pyarrow as pa

    from lape_hub.schemas import table_schema

    schema = table_schema("adapters")
    cfg = json.loads((folder / "lape_adapter.json").read_text())
    base = {k: cfg.get(k) for k in schema.columns}
    base.update(share=0.0004, artifact_path=str(folder), components="gate,up,down",
                params="{}", created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    for r in rows:
        cat.write("adapters", pa.Table.from_pylist([dict(base, **r)], schema=schema.arrow))


def _day(n: int):
    from datetime import datetime, timedelta, timezone

    return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=n)


def test_adapter_row_reads_only_rows_of_the_adapters_model_lang_and_method(tmp_path):
    """Rows of another model, language or method carry the folder's very digest and the
    latest time with the same signature: each would win if its filter were dropped."""
    from lape_hub.cards import AdapterInfo

    cat = build_catalog(tmp_path / "cat", counts=False)
    folder = make_adapter(tmp_path / "ad", catalog=cat)
    info = AdapterInfo.from_dir(folder)
    digest, sig = _folder_sha256(folder), info.signature
    assert (info.model, info.lang, info.method) == ("gemma-3-270m", "npi_Deva", "lape-sparse")
    _write_adapter_rows(
        cat, folder,
        dict(run_id="111111111111", best_val_loss=1.0, created_at=_day(1),
             artifact_sha256="a" * 64),                                       # the adapter's own
        dict(run_id="222222222222", best_val_loss=2.0, created_at=_day(9),
             artifact_sha256=digest, model="aaa-model"),                      # another model
        dict(run_id="333333333333", best_val_loss=3.0, created_at=_day(9),
             artifact_sha256=digest, lang="afr_Latn"),                        # another language
        dict(run_id="444444444444", best_val_loss=4.0, created_at=_day(9),
             artifact_sha256=digest, method="full"),                          # another method
        dict(run_id="555555555555", best_val_loss=5.0, created_at=_day(9),
             artifact_sha256="b" * 64, model="zzz-model"),
        dict(run_id="666666666666", best_val_loss=6.0, created_at=_day(9),
             artifact_sha256="c" * 64, lang="zul_Latn"),
        dict(run_id="777777777777", best_val_loss=7.0, created_at=_day(9),
             artifact_sha256="d" * 64, method="random"))
    row = publisher.adapter_row(info, cat)
    assert (row["run_id"], row["best_val_loss"]) == ("111111111111", 1.0)
    assert (row["model"], row["lang"], row["method"], row["signature"]) == (
        "gemma-3-270m", "npi_Deva", "lape-sparse", sig)
    # the foreign rows alone: nothing of this adapter's own
    other = build_catalog(tmp_path / "cat2", counts=False)
    _write_adapter_rows(other, folder,
                        dict(run_id="222222222222", best_val_loss=2.0, artifact_sha256=digest,
                             model="aaa-model"),
                        dict(run_id="333333333333", best_val_loss=3.0, artifact_sha256=digest,
                             lang="afr_Latn"),
                        dict(run_id="444444444444", best_val_loss=4.0, artifact_sha256=digest,
                             method="full"))
    assert publisher.adapter_row(info, other) is None


def test_adapter_row_prefers_the_digest_match_over_a_later_row_of_the_same_signature(tmp_path):
    """The row whose artifact hash is the folder's is the earliest, sits between others in
    the catalog's order and has another signature: only matching by digest finds it."""
    from lape_hub.cards import AdapterInfo

    cat = build_catalog(tmp_path / "cat", counts=False)
    folder = make_adapter(tmp_path / "ad", catalog=cat)
    info = AdapterInfo.from_dir(folder)
    digest, sig = _folder_sha256(folder), info.signature
    _write_adapter_rows(
        cat, folder,
        dict(run_id="aaaaaaaaaaaa", best_val_loss=3.0, created_at=_day(5),
             artifact_sha256="0" * 64),
        dict(run_id="bbbbbbbbbbbb", best_val_loss=2.0, created_at=_day(1),
             artifact_sha256=digest, signature="an older signature"),
        dict(run_id="cccccccccccc", best_val_loss=4.0, created_at=_day(7),
             artifact_sha256="1" * 64))
    row = publisher.adapter_row(info, cat)
    assert (row["run_id"], row["best_val_loss"], row["artifact_sha256"]) == (
        "bbbbbbbbbbbb", 2.0, digest)
    # the folder changes (its digest with it): the latest row of the same signature
    (folder / "eval_results.json").write_text("[]")
    assert _folder_sha256(folder) != digest
    assert publisher.adapter_row(info, cat)["run_id"] == "cccccccccccc"
    assert sig and publisher.adapter_row(AdapterInfo(**{**info.__dict__, "signature": ""}),
                                         cat) is None


def test_load_evaluations_signs_the_loss_with_the_catalog_rows_signature(tmp_path):
    """The catalog's row (matched by digest) signs the validation loss, not the folder's
    config; a row with an empty signature falls back to the config's."""
    import math

    from lape_hub.cards import AdapterInfo, Evaluation

    cat = build_catalog(tmp_path / "cat", counts=False)
    folder = make_adapter(tmp_path / "ad", catalog=cat, evals=False)
    info = AdapterInfo.from_dir(folder)
    cfg_sig = "model:gemma-3-270m@main|refset:paper-12|lang:npi_Deva|method:lape-sparse"
    assert info.signature == cfg_sig
    row_sig = "model:gemma-3-270m@main|refset:paper-12|lang:npi_Deva|method:lape-sparse|v:2"
    _write_adapter_rows(cat, folder, dict(run_id="aaaaaaaaaaaa", best_val_loss=2.0,
                                          artifact_sha256=_folder_sha256(folder),
                                          signature=row_sig))

    def expected(sig):
        return [Evaluation("text-generation", "sib200:train", "loss", 2.0, split="validation",
                           config="npi_Deva", name="validation loss (nats/token)",
                           signature=sig),
                Evaluation("text-generation", "sib200:train", "perplexity", math.exp(2.0),
                           split="validation", config="npi_Deva",
                           name="validation perplexity", signature=sig)]

    assert publisher.load_evaluations(info, cat) == expected(row_sig)
    unsigned = build_catalog(tmp_path / "cat2", counts=False)
    _write_adapter_rows(unsigned, folder, dict(run_id="aaaaaaaaaaaa", best_val_loss=2.0,
                                               artifact_sha256=_folder_sha256(folder),
                                               signature=""))
    assert publisher.load_evaluations(info, unsigned) == expected(cfg_sig)


def test_load_evaluations_names_the_results_file_of_a_bad_entry(tmp_path):
    import json

    from lape_hub.cards import AdapterInfo

    folder = make_adapter(tmp_path / "ad", evals=False)
    bad = {"dataset": "flores200", "value": 31.5}                       # no metric
    (folder / "eval_results.json").write_text(json.dumps([bad]))
    with pytest.raises(LapeHubError) as e:
        publisher.load_evaluations(AdapterInfo.from_dir(folder), None)
    assert str(e.value) == (f"{folder / 'eval_results.json'}: an evaluation needs dataset, "
                            f"metric and value (got {bad!r})")


def test_catalog_commit_message_counts_only_table_paths():
    """Files beside the tables (schemas, the card, look-alike paths outside every table) sent
    with a table change add neither a table label nor a model, nor turn "Add" into "Update"."""
    n1 = NEU.format(m="m1")
    pending = [Change("schemas/neurons.json", "added"), Change("README.md", "changed"),
               Change("notes/model=m9/lang=isl_Latn/data.parquet", "added"),
               Change("neurons/model=m9/data.parquet", "added"), Change(n1, "added")]
    assert publisher.catalog_commit_message(pending, {n1: {"npi_Deva"}}) == \
        "Add m1 · 1 language (neurons)"


def test_catalog_republished_missing_only_keeps_an_unchanged_card_and_names_the_repo(hub, tmp_path):
    """The same catalog again with --missing: every table entry skipped with its own size, the
    card (which names the repo it is published as) left unchanged rather than "skipped"."""
    cat = build_catalog(tmp_path / "a", counts=False)
    first = publish_catalog(cat, REPO, **FAST)
    card = first.plan.files["README.md"].source
    assert f'load_dataset("{REPO}"' in card.decode() and f"hf://datasets/{REPO}/" in card.decode()
    again = publish_catalog(cat, REPO, missing_only=True, dry_run=tmp_path / "s")
    assert {c.status for c in again.plan.changes} == {"unchanged"} and not again.plan.pending
    other = build_catalog(tmp_path / "b", counts=False)  # the same entries, other bytes: skipped
    r = publish_catalog(other, REPO, missing_only=True, dry_run=tmp_path / "s2")
    skipped = [c for c in r.plan.changes if c.status == "skipped" and c.path != "README.md"]
    assert [c.path for c in skipped] == [NEURONS]
    assert skipped[0].size == (other.root / NEURONS).stat().st_size
