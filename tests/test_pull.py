"""lape-hub pull: seed a local catalog from a published one, never overwriting local work."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from hub_server import build_catalog, hub  # noqa: F401 - fixture

from lape_hub.catalog import Catalog
from lape_hub.cli import cli
from lape_hub.publisher import publish_catalog
from lape_hub.pull import pull

REPO = "alice/lape-catalog"


@pytest.fixture
def published(hub, tmp_path):
    root = tmp_path / "published"
    build_catalog(root, ("npi_Deva", "mlt_Latn"))
    cat = build_catalog(root, ("npi_Deva",), model="llama-3.1-8b", counts=False, per_layer=1)
    publish_catalog(cat, REPO, backoff=0.01)
    return cat


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def test_pull_copies_only_that_models_entries_byte_exact(published, tmp_path):
    local = Catalog(tmp_path / "local")
    r = pull(local, "gemma-3-270m", hub_repo=REPO)
    want = {p: b for p, b in _files(published.root).items() if "llama" not in p}
    assert _files(local.root) == want
    assert sorted(r.added) == sorted(want)
    assert r.conflicts == [] and r.unchanged == []
    assert local.neuron_set("gemma-3-270m", "npi_Deva") == published.neuron_set("gemma-3-270m", "npi_Deva")


def test_second_pull_changes_nothing_and_local_work_is_kept(published, tmp_path):
    local = Catalog(tmp_path / "local")
    pull(local, "gemma-3-270m", hub_repo=REPO)
    again = pull(local, "gemma-3-270m", hub_repo=REPO)
    assert again.added == [] and again.conflicts == [] and len(again.unchanged) > 1
    # a local file that differs from the published one is a conflict, and is kept
    counts = next(local.root.glob("activation_counts/**/data.parquet"))
    mine = counts.read_bytes()
    other = next(p for p in local.root.glob("neurons/**/data.parquet"))
    counts.write_bytes(other.read_bytes())
    r = pull(local, "gemma-3-270m", hub_repo=REPO)
    rel = counts.relative_to(local.root).as_posix()
    assert r.conflicts == [rel] and counts.read_bytes() == other.read_bytes() != mine
    assert "differ locally and were kept" in r.summary()


def test_pull_command(published, tmp_path):
    target = tmp_path / "catalog"   # created: its parent exists
    res = CliRunner().invoke(cli, ["pull", "--model", "llama-3.1-8b", "--hub-repo", REPO,
                                   "--catalog", str(target)])
    assert res.exit_code == 0, res.output
    assert "pulled from" in res.output and "2 new" in res.output  # CATALOG.json + neurons
    assert Catalog(target).neuron_set("llama-3.1-8b", "npi_Deva").n_neurons > 0
