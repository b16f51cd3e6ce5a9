"""Fetching from the remote catalog (a fake Hub over HTTP, the real huggingface_hub client)."""
from __future__ import annotations

import json

import pytest
from hub_server import ALICE, BOB, build_catalog, hub  # noqa: F401 - fixture

from lape_hub.catalog import Catalog
from lape_hub.config import load_settings, resolve_hub_repo
from lape_hub.errors import HubError, NotInCatalogError, SchemaError, UnknownModelError
from lape_hub.paths import cache_dir
from lape_hub.publisher import publish_catalog
from lape_hub.remote import hub_cache_dir, remote_catalog

REPO = "alice/lape-catalog"
GEMMA_NEURONS = "neurons/model=gemma-3-270m/refset=paper-12/selection=top0.05-f0.95-b0.95/" \
                "data.parquet"


def published(hub, tmp_path, langs=("npi_Deva", "mlt_Latn", "afr_Latn")) -> Catalog:
    """A local catalog with gemma (neurons + counts) and llama (neurons), published."""
    root = tmp_path / "local"
    build_catalog(root, langs)
    cat = build_catalog(root, ("npi_Deva", "isl_Latn"), model="llama-3.1-8b", counts=False,
                        per_layer=1)
    publish_catalog(cat, REPO, backoff=0.01)
    return cat


def files_under(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
            and ".cache" not in p.relative_to(root).parts}


def resolves(hub) -> list[str]:
    return [p for m, p, _ in hub.requests if "/resolve/" in p and m == "GET"]


def test_fetch_only_the_needed_partitions_byte_exact(hub, tmp_path):
    local = published(hub, tmp_path)
    hub.requests.clear()
    cat = remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
    sha = hub.repo(REPO).head
    assert cat.root == cache_dir() / "hub" / "alice" / "lape-catalog" / sha
    assert files_under(cat.root) == {p: (local.root / p).read_bytes()
                                     for p in ("CATALOG.json", GEMMA_NEURONS)}
    assert not [p for p in resolves(hub) if "llama" in p or "activation_counts" in p]
    ns, want = cat.neuron_set("GEMMA-3-270M", "ne"), local.neuron_set("gemma-3-270m", "npi_Deva")
    assert ns == want and ns.content_hash == want.content_hash

    everything = remote_catalog(REPO)
    assert files_under(everything.root) == {p: b for p, b in files_under(local.root).items()}
    hub.requests.clear()
    again = remote_catalog(REPO)               # the commit is cached: only "main" is resolved
    assert again.root == everything.root and not resolves(hub)
    assert [p for _, p, _ in hub.requests] == [f"/api/datasets/{REPO}/revision/main"]


def test_lang_filter_and_unknown_names(hub, tmp_path):
    published(hub, tmp_path)
    cat = remote_catalog(REPO, model="gemma-3-270m", tables=["activation_counts"], lang="Maltese")
    parts = [e.key["lang"] for e in cat.entries("activation_counts")]
    assert parts == ["mlt_Latn"]
    with pytest.raises(NotInCatalogError, match="has no lape entries for model=gemma-3-270m"):
        remote_catalog(REPO, model="gemma-3-270m", tables=["lape"])
    with pytest.raises(UnknownModelError):
        remote_catalog(REPO, model="no-such-model")


def test_revision_is_pinned_and_recorded(hub, tmp_path):
    published(hub, tmp_path)
    first = hub.repo(REPO).head
    old = remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
    ref = hub_cache_dir(REPO) / "refs" / "main"
    assert ref.read_text().strip() == first
    record = json.loads((old.root / ".lape-hub-remote.json").read_text())
    assert record["sha"] == first and GEMMA_NEURONS in record["files"]

    publish_catalog(build_catalog(tmp_path / "local", ("npi_Deva", "mlt_Latn", "afr_Latn",
                                                       "isl_Latn")), REPO, backoff=0.01)
    new = remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
    assert new.root.name == hub.repo(REPO).head != first
    assert ref.read_text().strip() == hub.repo(REPO).head
    assert len(new.neuron_sets_available("gemma-3-270m")[("paper-12", "top0.05-f0.95-b0.95")]) == 4
    pinned = remote_catalog(REPO, revision=first, model="gemma-3-270m", tables=["neurons"])
    assert pinned.root == old.root
    assert len(pinned.neuron_sets_available("gemma-3-270m")[("paper-12",
                                                             "top0.05-f0.95-b0.95")]) == 3


def test_offline_works_from_the_cache(hub, tmp_path, monkeypatch):
    published(hub, tmp_path)
    online = remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
    hub.stop()                                       # no server at all from here on
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
    assert offline.root == online.root
    assert offline.neuron_set("gemma-3-270m", "mlt_Latn").n_neurons == 18 * 3
    with pytest.raises(HubError, match=r"offline \(HF_HUB_OFFLINE=1\) and 3 file\(s\) .* not "
                                       r"cached"):
        remote_catalog(REPO, model="gemma-3-270m", tables=["activation_counts"])
    with pytest.raises(HubError, match="never fetched"):
        remote_catalog("alice/other", model="gemma-3-270m")


def test_offline_reads_a_pinned_commit_from_the_cache(hub, tmp_path, monkeypatch):
    """A commit sha pinned by the caller needs no ref: offline, that commit's cached files
    are served (not main's, which moved on), and another commit is refused by name."""
    published(hub, tmp_path)
    first = hub.repo(REPO).head
    pinned = remote_catalog(REPO, revision=first, model="gemma-3-270m", tables=["neurons"])
    publish_catalog(build_catalog(tmp_path / "local", ("npi_Deva", "mlt_Latn", "afr_Latn",
                                                       "isl_Latn")), REPO, backoff=0.01)
    second = hub.repo(REPO).head
    remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])      # main -> second
    assert not (hub_cache_dir(REPO) / "refs" / first).exists()
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = remote_catalog(REPO, revision=first, model="gemma-3-270m", tables=["neurons"])
    assert offline.root == pinned.root and offline.root.name == first
    assert files_under(offline.root) == files_under(pinned.root)
    sets = offline.neuron_sets_available("gemma-3-270m")[("paper-12", "top0.05-f0.95-b0.95")]
    assert len(sets) == 3                               # the pinned commit, not main's 4
    assert remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"]).root.name == second
    other = "0" * 40
    with pytest.raises(HubError, match=rf"offline \(HF_HUB_OFFLINE=1\) and dataset repo "
                                       rf"{REPO}@{other[:12]} is not cached"):
        remote_catalog(REPO, revision=other, model="gemma-3-270m", tables=["neurons"])


def test_newer_remote_schema_is_refused(hub, tmp_path):
    local = build_catalog(tmp_path / "local", counts=False)
    hub.add_repo("alice/future", files={
        "CATALOG.json": json.dumps({"format": "lape-hub-catalog", "schema_version": 2}).encode(),
        GEMMA_NEURONS: (local.root / GEMMA_NEURONS).read_bytes()})
    with pytest.raises(SchemaError, match=r"alice/future@\w+ has schema version 2, newer than "
                                          r"this lape-hub's 1: upgrade lape-hub"):
        remote_catalog("alice/future", model="gemma-3-270m")
    assert not [p for p in resolves(hub) if p.endswith(".parquet")]
    # and publishing into it is refused too, naming both versions
    with pytest.raises(SchemaError, match="schema version 2, newer than this lape-hub's 1"):
        publish_catalog(local, "alice/future")


def test_unknown_and_unauthorized_repos_are_told_apart(hub, tmp_path, monkeypatch):
    published(hub, tmp_path)
    hub.add_repo("bob/private", private=True)
    with pytest.raises(HubError, match=r"dataset repo alice/nope not found on http://127\.0\.0\.1"
                                       r":\d+ \(404\)") as e:
        remote_catalog("alice/nope")
    assert e.value.status == 404
    with pytest.raises(HubError, match=r"\(404\)"):
        remote_catalog("bob/private")                # alice may not see it: hidden as 404
    monkeypatch.setenv("HF_TOKEN", BOB)
    with pytest.raises(HubError, match="is not a lape-hub catalog"):   # bob sees his repo
        remote_catalog("bob/private")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match=r"not found or private, and no valid token was sent "
                                       r"\(401\)") as e:
        remote_catalog("bob/private")
    assert e.value.status == 401
    assert remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])   # public: no token
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token")
    with pytest.raises(HubError, match=r"rejected the token \(401 invalid credentials\)") as e:
        remote_catalog(REPO, revision="main")
    assert "hf_wrong_token" not in str(e.value)
    monkeypatch.setenv("HF_TOKEN", ALICE)
    with pytest.raises(HubError, match="revision not found in dataset repo"):
        remote_catalog(REPO, revision="no-such-branch")


def test_a_private_catalog_is_read_with_its_owners_token(hub, tmp_path, monkeypatch):
    local = build_catalog(tmp_path / "local", counts=False)
    publish_catalog(local, "alice/secret-cat", private=True, backoff=0.01)
    assert hub.repo("alice/secret-cat").private
    cat = remote_catalog("alice/secret-cat", model="gemma-3-270m")
    assert files_under(cat.root)[GEMMA_NEURONS] == (local.root / GEMMA_NEURONS).read_bytes()
    monkeypatch.setenv("HF_TOKEN", BOB)
    with pytest.raises(HubError, match=r"\(404\)"):
        remote_catalog("alice/secret-cat", revision="main", cache=tmp_path / "bob-cache")


def test_transient_read_errors_are_retried(hub, tmp_path):
    published(hub, tmp_path)
    hub.fail("GET", r"/revision/main$", 503, times=2)
    hub.fail("GET", r"/tree/", 502, times=1)
    assert remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"]).entries("neurons")
    hub.fail("GET", r"/revision/main$", 500, times=10)
    with pytest.raises(HubError, match=r"the Hub failed \(HTTP 500\) while resolving main of "
                                       r"dataset repo alice/lape-catalog; try again later"):
        remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])


def test_download_is_checked_against_the_listed_checksum(hub, tmp_path):
    published(hub, tmp_path)
    cat = remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
    record_path = cat.root / ".lape-hub-remote.json"
    record = json.loads(record_path.read_text())
    record["files"][GEMMA_NEURONS]["sha256"] = "0" * 64
    record_path.write_text(json.dumps(record))
    (cat.root / GEMMA_NEURONS).unlink()
    with pytest.raises(HubError, match="does not match the checksum the Hub lists"):
        remote_catalog(REPO, model="gemma-3-270m", tables=["neurons"])
    assert not (cat.root / GEMMA_NEURONS).exists()


def test_hub_repo_resolution(monkeypatch, tmp_path):
    config = tmp_path / "config.toml"
    monkeypatch.setenv("LAPE_HUB_CONFIG", str(config))
    monkeypatch.delenv("LAPE_HUB_REPO", raising=False)
    with pytest.raises(HubError, match=f"no Hub repo given: pass --hub-repo ORG/NAME, set "
                                       f"\\$LAPE_HUB_REPO, or set .* in {config}"):
        resolve_hub_repo(None)
    config.write_text('[hub]\nrepo = "cfg-org/cat"\nadapter_namespace = "ad-org"\n'
                      "private = true\n")
    assert resolve_hub_repo(None) == "cfg-org/cat"
    assert load_settings().adapter_namespace == "ad-org" and load_settings().private
    monkeypatch.setenv("LAPE_HUB_REPO", "env-org/cat")
    assert resolve_hub_repo(None) == "env-org/cat"
    assert resolve_hub_repo("cli-org/cat") == "cli-org/cat"
    with pytest.raises(HubError, match="'not a repo' is not a Hub repo id of the form ORG/NAME"):
        resolve_hub_repo("not a repo")
    monkeypatch.setenv("LAPE_HUB_REPO", "a/b/c")
    with pytest.raises(HubError, match=r"\$LAPE_HUB_REPO: 'a/b/c' is not a Hub repo id"):
        resolve_hub_repo(None)
    config.write_text('[hub]\nrepository = "x/y"\n')
    with pytest.raises(HubError, match=r"unknown \[hub\] keys \['repository'\]"):
        load_settings()


def test_cli_fetch_and_sql_from_the_remote(hub, tmp_path, monkeypatch):
    """`lape-hub fetch --model llama-3.1-8b --lang ne` works for anything someone published."""
    from click.testing import CliRunner

    from lape_hub.cli import cli

    local = published(hub, tmp_path)
    empty = tmp_path / "empty-catalog"
    runner = CliRunner()
    out = tmp_path / "ne.json"
    monkeypatch.setenv("LAPE_HUB_CATALOG", str(empty))
    r = runner.invoke(cli, ["fetch", "--model", "llama-3.1-8b", "--lang", "ne", "--hub-repo", REPO,
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    want = local.neuron_set("llama-3.1-8b", "npi_Deva")
    assert f"neurons: {want.n_neurons:,}" in r.output
    # no flag: the local catalog lacks it, the configured repo ($LAPE_HUB_REPO) has it
    monkeypatch.setenv("LAPE_HUB_REPO", REPO)
    r = runner.invoke(cli, ["fetch", "--model", "llama-3.1-8b", "--lang", "is", "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["sql", "--remote", "--model", "gemma-3-270m", "--format", "csv",
                            "SELECT count(DISTINCT lang) AS n FROM neurons WHERE model = 'gemma-3-270m'"])
    from lape_hub.query import run_sql

    want = run_sql(local, "SELECT count(DISTINCT lang) FROM neurons WHERE model='gemma-3-270m'")
    assert r.exit_code == 0 and r.output.splitlines()[1] == str(want.fetchall()[0][0]), r.output
