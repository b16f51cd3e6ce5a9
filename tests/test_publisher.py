"""The publisher against a fake Hub over HTTP, driven by the real huggingface_hub client."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from hub_server import ALICE, FakeHub, build_catalog, hub  # noqa: F401 - fixture

from lape_hub.catalog import Catalog
from lape_hub.errors import HubError, NotInCatalogError
from lape_hub.publisher import publish_adapter, publish_catalog

REPO = "alice/lape-catalog"
FAST = {"backoff": 0.01}


def local_repo_files(cat: Catalog) -> dict[str, bytes]:
    from lape_hub.paths import schemas_dir

    out = {p.relative_to(cat.root).as_posix(): p.read_bytes() for p in cat.iter_files()}
    out.update({f"schemas/{p.name}": p.read_bytes() for p in schemas_dir().glob("*.json")})
    return out


def card_metadata(readme: bytes) -> dict:
    text = readme.decode()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def lape_commits(hub: FakeHub, repo: str = REPO, repo_type: str = "dataset") -> list[str]:
    return [c.summary for c in hub.repo(repo, repo_type).commits[1:]]


# -- publish, republish, incremental -----------------------------------------------------------
def test_publish_then_republish_makes_no_commit(hub, tmp_path):
    cat = build_catalog(tmp_path / "cat")
    first = publish_catalog(cat, REPO, **FAST)
    assert first.commit == hub.repo(REPO).head
    assert lape_commits(hub) == [
        "Add gemma-3-270m · 3 languages (activation_counts, neurons)"]
    remote = hub.files(REPO)
    for path, data in local_repo_files(cat).items():
        assert remote[path] == data, path
    meta = card_metadata(remote["README.md"])
    assert meta["language"] == ["af", "mt", "ne"]
    assert {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]} == {
        "activation_counts": "activation_counts/**/*.parquet",
        "neurons": "neurons/**/*.parquet"}

    again = publish_catalog(cat, REPO, **FAST)
    assert again.commit is None and not again.plan.pending
    assert len(hub.repo(REPO).commits) == 2
    assert "up to date" in again.summary()


def test_only_changed_files_are_uploaded(hub, tmp_path):
    root = tmp_path / "cat"
    publish_catalog(build_catalog(root), REPO, **FAST)
    cat = build_catalog(root, ("npi_Deva", "mlt_Latn", "afr_Latn", "isl_Latn"), counts=False)
    build_catalog(tmp_path / "scratch", ("isl_Latn",))           # a counts file for isl only
    src = next((tmp_path / "scratch").glob("activation_counts/**/data.parquet"))
    dest = root / src.relative_to(tmp_path / "scratch")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(src.read_bytes())
    hub.requests.clear()
    result = publish_catalog(cat, REPO, **FAST)
    uploads = sorted(p for m, p, _ in hub.requests if m == "PUT")
    assert len(uploads) == 2                     # the rewritten neurons file + the new counts
    changed = {c.path: c.status for c in result.plan.pending}
    assert changed == {
        "README.md": "changed",
        "neurons/model=gemma-3-270m/refset=paper-12/selection=top0.05-f0.95-b0.95/data.parquet":
            "changed",
        dest.relative_to(root).as_posix(): "added"}
    assert lape_commits(hub)[-1] == "Update gemma-3-270m · 1 language (activation_counts, neurons)"


def test_regular_upload_mode_compares_git_blob_ids(monkeypatch, tmp_path, hub):
    """A server that takes every file inline: unchanged files are found by git blob id."""
    with FakeHub({ALICE: "alice"}, upload_mode="regular") as inline:
        monkeypatch.setenv("HF_ENDPOINT", inline.url)
        cat = build_catalog(tmp_path / "cat")
        assert publish_catalog(cat, REPO, **FAST).commit
        assert not any(m == "PUT" for m, _, _ in inline.requests)   # no LFS transfer at all
        assert publish_catalog(cat, REPO, **FAST).commit is None
        assert len(inline.repo(REPO).commits) == 2


def test_empty_catalog_is_refused(hub, tmp_path):
    with pytest.raises(NotInCatalogError, match="no entries"):
        publish_catalog(Catalog(tmp_path / "empty"), REPO)


# -- dry run -----------------------------------------------------------------------------------
def test_dry_run_stages_the_tree_and_pushes_nothing(hub, tmp_path, capsys):
    from lape_hub.cli import main

    root = tmp_path / "cat"
    cat = build_catalog(root)
    publish_catalog(cat, REPO, **FAST)
    build_catalog(root, ("npi_Deva", "mlt_Latn", "afr_Latn", "isl_Latn"), counts=False)
    stage = tmp_path / "stage"
    main(["publish", "catalog", "--catalog", str(root), "--hub-repo", REPO,
          "--dry-run", str(stage)])
    out = capsys.readouterr().out
    assert f"0 added, 2 changed, 0 deleted, {len(local_repo_files(cat)) - 1} unchanged" in out
    assert "changed   neurons/model=gemma-3-270m" in out and "changed   README.md" in out
    assert "commit: Update gemma-3-270m · 1 language (neurons)" in out
    assert "nothing pushed" in out
    assert len(hub.repo(REPO).commits) == 2
    staged = {p.relative_to(stage).as_posix(): p.read_bytes() for p in stage.rglob("*")
              if p.is_file() and p.name != ".lape-hub-staging"}
    local = local_repo_files(Catalog(root))
    assert set(staged) == set(local) | {"README.md"}
    assert all(staged[p] == local[p] for p in local)
    # staging again into the same folder is allowed; a foreign non-empty folder is not
    main(["publish", "catalog", "--catalog", str(root), "--hub-repo", REPO,
          "--dry-run", str(stage)])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main(["publish", "catalog", "--catalog", str(root), "--hub-repo", REPO,
              "--dry-run", str(tmp_path / "other")])
    assert "is not empty" in capsys.readouterr().err


def test_dataset_card_configs_load_with_datasets(hub, tmp_path):
    datasets = pytest.importorskip("datasets")
    cat = build_catalog(tmp_path / "cat")
    stage = tmp_path / "stage"
    publish_catalog(cat, REPO, dry_run=stage)
    neurons = datasets.load_dataset(str(stage), "neurons", split="train")
    assert neurons.num_rows == cat.read("neurons").num_rows
    assert set(neurons.unique("lang")) == {"npi_Deva", "mlt_Latn", "afr_Latn"}
    counts = datasets.load_dataset(str(stage), "activation_counts", split="train")
    assert counts.num_rows == cat.read("activation_counts").num_rows


# -- --missing and the no-data-loss guard ------------------------------------------------------
def test_missing_publishes_only_new_languages(hub, tmp_path):
    root = tmp_path / "cat"
    publish_catalog(build_catalog(root), REPO, **FAST)
    rebuilt = build_catalog(root)               # same languages, new timestamps: bytes differ
    result = publish_catalog(rebuilt, REPO, missing_only=True, **FAST)
    assert result.commit is None
    assert {c.status for c in result.plan.changes} <= {"unchanged", "skipped"}
    assert publish_catalog(rebuilt, REPO, dry_run=tmp_path / "s").plan.pending  # default would
    more = build_catalog(root, ("npi_Deva", "mlt_Latn", "afr_Latn", "isl_Latn"))
    result = publish_catalog(more, REPO, missing_only=True, **FAST)
    published = sorted(c.path.split("/")[0] + ":" + c.status for c in result.plan.pending)
    assert published == ["README.md:changed", "activation_counts:added", "neurons:changed"]
    assert lape_commits(hub)[-1] == "Update gemma-3-270m · 1 language (activation_counts, neurons)"


def test_refuses_to_drop_remote_languages(hub, tmp_path):
    publish_catalog(build_catalog(tmp_path / "a", ("npi_Deva", "mlt_Latn", "isl_Latn")), REPO,
                    **FAST)
    fewer = build_catalog(tmp_path / "b", ("npi_Deva", "mlt_Latn"), counts=False)
    with pytest.raises(HubError, match=r"would drop 1 language\(s\) the remote has \(isl_Latn\)"):
        publish_catalog(fewer, REPO, **FAST)
    assert len(hub.repo(REPO).commits) == 2
    assert publish_catalog(fewer, REPO, force=True, **FAST).commit


def test_prune_deletes_remote_only_files(hub, tmp_path):
    publish_catalog(build_catalog(tmp_path / "a"), REPO, **FAST)
    only_neurons = build_catalog(tmp_path / "b", counts=False)
    kept = publish_catalog(only_neurons, REPO, dry_run=tmp_path / "s1")
    assert kept.plan.counts()["kept"] == 3 and kept.plan.counts()["deleted"] == 0
    pruned = publish_catalog(only_neurons, REPO, prune=True, **FAST)
    assert pruned.plan.counts()["deleted"] == 3
    assert not any(p.startswith("activation_counts/") for p in hub.files(REPO))
    assert lape_commits(hub)[-1].endswith("remove 3 files")


# -- concurrency and faults --------------------------------------------------------------------
def test_concurrent_publish_is_replanned_once(hub, tmp_path):
    cat = build_catalog(tmp_path / "cat")
    publish_catalog(cat, REPO, **FAST)
    cat = build_catalog(tmp_path / "cat", ("npi_Deva", "mlt_Latn", "afr_Latn", "isl_Latn"),
                        counts=False)
    landed = []

    def other_client(repo):
        if not landed:
            landed.append(hub.push_files(REPO, {"notes.txt": b"from another publisher"},
                                         message="concurrent"))

    hub.before_commit = other_client
    result = publish_catalog(cat, REPO, **FAST)
    assert result.replanned and result.commit
    assert result.plan.parent == landed[0]
    assert lape_commits(hub)[-2:] == ["concurrent", "Update gemma-3-270m · 1 language (neurons)"]
    assert hub.files(REPO)["notes.txt"] == b"from another publisher"


def test_concurrent_publish_refused_when_the_head_keeps_moving(hub, tmp_path):
    publish_catalog(build_catalog(tmp_path / "cat"), REPO, **FAST)
    cat = build_catalog(tmp_path / "cat", ("npi_Deva", "isl_Latn", "mlt_Latn", "afr_Latn"))
    n = iter(range(100))
    hub.before_commit = lambda repo: hub.push_files(REPO, {f"n{next(n)}.txt": b"x"},
                                                    message="other")
    with pytest.raises(HubError, match="changed again while publishing .* nothing was "
                                       "committed by this run"):
        publish_catalog(cat, REPO, **FAST)
    assert lape_commits(hub)[1:] == ["other", "other"]


def test_transient_errors_are_retried(hub, tmp_path):
    hub.fail("POST", r"/commit/", 503, times=2)
    result = publish_catalog(build_catalog(tmp_path / "cat"), REPO, **FAST)
    assert result.commit and len(lape_commits(hub)) == 1


def test_lost_commit_response_makes_no_duplicate(hub, tmp_path):
    cat = build_catalog(tmp_path / "cat")
    hub.add_repo(REPO)
    hub.fail("POST", r"/commit/", 502, after_apply=True)
    result = publish_catalog(cat, REPO, **FAST)
    # the retry finds every file already there: the commit that landed is reported, once
    assert len(lape_commits(hub)) == 1 and result.commit == hub.repo(REPO).head
    assert hub.files(REPO)["CATALOG.json"] == (cat.root / "CATALOG.json").read_bytes()


def test_failed_publish_leaves_the_remote_as_it_was(hub, tmp_path):
    publish_catalog(build_catalog(tmp_path / "cat"), REPO, **FAST)
    before = hub.files(REPO)
    head = hub.repo(REPO).head
    hub.fail("POST", r"/commit/", 500, times=10)
    cat = build_catalog(tmp_path / "cat", ("npi_Deva", "isl_Latn"), counts=False)
    with pytest.raises(HubError, match=r"the Hub failed \(HTTP 500\) while committing"):
        publish_catalog(cat, REPO, retries=2, force=True, **FAST)
    assert hub.repo(REPO).head == head and hub.files(REPO) == before


# -- auth and the token ------------------------------------------------------------------------
def test_auth_failures_are_one_clear_line(hub, tmp_path, monkeypatch):
    cat = build_catalog(tmp_path / "cat", counts=False)
    hub.add_repo("bob/catalog")
    with pytest.raises(HubError, match=r"no write access to dataset repo bob/catalog \(403\)") as e:
        publish_catalog(cat, "bob/catalog")
    assert e.value.status == 403
    with pytest.raises(HubError, match=r"\(403\)"):
        publish_catalog(cat, "stranger-org/catalog")          # creating in a foreign namespace
    assert ("dataset", "stranger-org/catalog") not in hub.repos
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(HubError, match=r"rejected the token \(401 invalid credentials\)") as e:
        publish_catalog(cat, REPO)
    assert e.value.status == 401 and "hf_not_a_real_token" not in str(e.value)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hugging Face token"):
        publish_catalog(cat, REPO)
    assert publish_catalog(cat, "lape-org/catalog", token=ALICE).commit   # alice's org


def test_token_never_appears_in_output_logs_cards_or_repos(hub, tmp_path, capsys, caplog):
    from lape_hub.cli import main

    caplog.set_level(logging.DEBUG)
    root = tmp_path / "cat"
    build_catalog(root)
    main(["publish", "catalog", "--catalog", str(root), "--hub-repo", REPO, "-v"])
    main(["publish", "catalog", "--catalog", str(root), "--hub-repo", REPO, "--dry-run",
          str(tmp_path / "stage")])
    adapter = make_adapter(tmp_path / "ad")
    main(["publish", "adapter", str(adapter), "--hub-repo", "alice/ad", "--catalog", str(root)])
    hub.add_repo("bob/catalog")
    with pytest.raises(SystemExit):
        main(["publish", "catalog", "--catalog", str(root), "--hub-repo", "bob/catalog"])
    # a server that repeats the credentials it got in its error message (issue 14): the
    # message is shown, the token in it is not
    hub.echo = True
    hub.fail("POST", r"/commit/", 422)
    build_catalog(root, ("npi_Deva", "isl_Latn", "mlt_Latn", "afr_Latn"), counts=False)
    with pytest.raises(SystemExit):
        main(["publish", "catalog", "--catalog", str(root), "--hub-repo", REPO])
    captured = capsys.readouterr()
    assert "error: no write access" in captured.err
    assert "(request had Authorization: Bearer hf_***)" in captured.err
    # lape-hub's and huggingface_hub's log records (the HTTP library's own DEBUG traces
    # repeat the echoing server's response headers verbatim; lape-hub never enables them)
    texts = [captured.out, captured.err]
    texts += [r.getMessage() for r in caplog.records
              if r.name.split(".")[0] in ("lape_hub", "huggingface_hub")]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    for repo in hub.repos.values():
        for c in repo.commits:
            texts += [c.summary, c.description]
            texts += [b.data.decode("latin-1") for b in c.files.values()]
    secret = ALICE[3:]                   # any part of it would do; check the distinctive tail
    assert not [t for t in texts if secret in t]
    sent = [{k.lower(): v for k, v in h.items()} for _, _, h in hub.requests]
    assert any(h.get("authorization") == f"Bearer {ALICE}" for h in sent)   # it was used


# -- adapters ----------------------------------------------------------------------------------
def make_adapter(folder: Path, lang: str = "npi_Deva", *, catalog: Catalog | None = None,
                 evals: bool = True) -> Path:
    """A folder as lape_hub.sparse_adapter writes it (weights + lape_adapter.json)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"layers.0.gate.indices": np.arange(3, dtype=np.int64),
               "layers.0.gate.delta": np.ones((3, 640), np.float32)},
              str(folder / "lape_adapter.safetensors"))
    ns_hash = catalog.neuron_set("gemma-3-270m", lang).content_hash if catalog else "0" * 64
    (folder / "lape_adapter.json").write_text(json.dumps({
        "model": "gemma-3-270m", "lang": lang, "method": "lape-sparse",
        "repo_id": "google/gemma-3-270m", "revision": "main", "refset": "paper-12",
        "components": ["gate", "up", "down"], "neuron_set_hash": ns_hash, "n_neurons": 54,
        "trainable_params": 103680, "total_params": 268098176, "corpus": "sib200:train",
        "tokens": 40960, "steps": 200, "best_step": 150, "best_val_loss": 2.5,
        "hyperparameters": {"lr": 1e-4, "seed": 0}, "lape_hub_version": "0.1.0",
        "format": "lape-hub-adapter", "format_version": 1,
        "signature": f"model:gemma-3-270m@main|refset:paper-12|lang:{lang}|method:lape-sparse"}))
    if evals:
        (folder / "eval_results.json").write_text(json.dumps([
            {"task": "text-generation", "dataset": "flores200", "split": "devtest",
             "metric": "chrf", "value": 31.5, "signature": "chrf|flores200|v:0.1.0"}]))
    return folder


def add_adapter_row(cat: Catalog, folder: Path, best_val_loss: float) -> None:
    """The catalog's ``adapters`` row for ``folder``, as lape_hub.finetune records it."""
    from datetime import datetime, timezone

    import pyarrow as pa

    from lape_hub.publisher import _artifact_sha256
    from lape_hub.schemas import table_schema

    cfg = json.loads((folder / "lape_adapter.json").read_text())
    row = {k: cfg.get(k) for k in table_schema("adapters").columns}
    row.update(run_id="0123456789ab", best_val_loss=best_val_loss, share=0.0004,
               artifact_path=str(folder), artifact_sha256=_artifact_sha256(folder),
               components="gate,up,down", created_at=datetime.now(timezone.utc), params="{}")
    cat.write("adapters", pa.Table.from_pylist([row], schema=table_schema("adapters").arrow))


def test_adapter_repo_with_model_card(hub, tmp_path):
    import math

    from huggingface_hub import ModelCard

    cat = build_catalog(tmp_path / "cat")
    folder = make_adapter(tmp_path / "adapter", catalog=cat)
    add_adapter_row(cat, folder, best_val_loss=2.0)     # the catalog's row wins over the config
    result = publish_adapter(folder, "alice/gemma-npi", catalog=cat, catalog_repo=REPO, **FAST)
    assert result.commit and result.plan.repo_type == "model"
    files = hub.files("alice/gemma-npi", "model")
    for name in ("lape_adapter.safetensors", "lape_adapter.json", "eval_results.json"):
        assert files[name] == (folder / name).read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "google/gemma-3-270m"
    assert card.data.language == ["ne"] and card.data.license == "gemma"
    assert card.data.library_name == "lape-hub"
    assert {"lape-hub", "sparse-fine-tuning", "lang:npi_Deva"} <= set(card.data.tags)
    evals = {e.metric_type: e for e in card.data.eval_results}
    assert evals["loss"].metric_value == 2.0 and evals["loss"].dataset_type == "sib200:train"
    assert math.isclose(evals["perplexity"].metric_value, math.exp(2.0))
    assert evals["chrf"].metric_value == 31.5 and evals["chrf"].dataset_split == "devtest"
    ns = cat.neuron_set("gemma-3-270m", "npi_Deva")
    assert f"| neurons | {ns.n_neurons:,} |" in card.text
    assert "| lr | 0.0001 |" in card.text and "| best validation loss | 2.5000 |" in card.text
    assert f"datasets/{REPO}" in card.text and "Signature: `model:gemma-3-270m@main" in card.text
    assert lape_commits(hub, "alice/gemma-npi", "model") == [
        "Add adapter gemma-3-270m · npi_Deva (lape-sparse)"]
    assert publish_adapter(folder, "alice/gemma-npi", catalog=cat, catalog_repo=REPO).commit \
        is None


def test_adapter_mirror_prunes_and_missing_leaves_it_alone(hub, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    folder = make_adapter(tmp_path / "adapter", evals=False)
    save_file({"old": np.zeros(2, np.float32)}, str(folder / "dense_weights.safetensors"))
    publish_adapter(folder, "alice/ad", **FAST)
    (folder / "dense_weights.safetensors").unlink()
    (folder / "lape_adapter.json").write_text(
        (folder / "lape_adapter.json").read_text().replace("200", "300"))
    skipped = publish_adapter(folder, "alice/ad", missing_only=True, **FAST)
    assert skipped.commit is None and skipped.plan.counts()["skipped"] == 3
    updated = publish_adapter(folder, "alice/ad", **FAST)
    assert {c.path: c.status for c in updated.plan.pending} == {
        "dense_weights.safetensors": "deleted", "lape_adapter.json": "changed",
        "README.md": "changed"}
    assert "dense_weights.safetensors" not in hub.files("alice/ad", "model")


def test_adapter_with_merged_model(hub, tmp_path):
    folder = make_adapter(tmp_path / "adapter", evals=False)
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.ones(3, np.float32)}, str(merged / "model.safetensors"))
    publish_adapter(folder, "alice/ad", merged=merged, **FAST)
    files = hub.files("alice/ad", "model")
    assert files["merged/model.safetensors"] == (merged / "model.safetensors").read_bytes()
    assert "subfolder=\"merged\"" in files["README.md"].decode()
    assert lape_commits(hub, "alice/ad", "model")[-1].endswith("with the merged model")


def test_publish_missing_cli_publishes_catalog_and_adapters(hub, tmp_path, capsys):
    from lape_hub.cli import main

    root = tmp_path / "cat"
    cat = build_catalog(root)
    make_adapter(tmp_path / "adapters" / "gemma-3-270m" / "npi_Deva", catalog=cat)
    merged = make_adapter(tmp_path / "adapters" / "merged" / "npi", evals=False)
    (merged / "config.json").write_text("{}")       # a merged model, not an adapter: skipped
    args = ["publish", "--missing", "--catalog", str(root), "--hub-repo", REPO,
            "--adapters", str(tmp_path / "adapters")]
    main(args)
    out = capsys.readouterr().out
    assert f"dataset repo {REPO} (new): {len(local_repo_files(cat)) + 1} added" in out
    assert "model repo alice/gemma-3-270m-npi_Deva-lape-sparse (new): 4 added" in out
    assert ("model", "alice/gemma-3-270m-npi_Deva-lape-sparse") in hub.repos
    main(args)
    out = capsys.readouterr().out
    assert out.count("is up to date: no commit") == 2


def test_publish_without_target_is_a_usage_error(capsys):
    from lape_hub.cli import main

    with pytest.raises(SystemExit) as e:
        main(["publish"])
    assert e.value.code == 2 and "say what to publish" in capsys.readouterr().err


def test_options_before_the_subcommand_are_its_defaults(hub, tmp_path, capsys):
    from lape_hub.cli import main

    root = tmp_path / "cat"
    build_catalog(root, counts=False)
    stage = tmp_path / "stage"
    main(["publish", "--hub-repo", REPO, "--catalog", str(root), "--dry-run", str(stage),
          "catalog"])
    assert f"dataset repo {REPO} (new)" in capsys.readouterr().out
    assert (stage / "CATALOG.json").is_file() and ("dataset", REPO) not in hub.repos
    with pytest.raises(SystemExit) as e:
        main(["publish", "--adapters", str(tmp_path), "catalog"])
    assert e.value.code == 2 and "--adapters goes with" in capsys.readouterr().err
