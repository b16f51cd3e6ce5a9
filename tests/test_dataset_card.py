"""The catalog's dataset card is one the Hub and `datasets` understand: task and size
categories, one config per table that `datasets.load_dataset(repo, config)` reads (tested
on a staged dry-run tree, offline); a dry run with no Hub reachable still stages."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from hub_server import build_catalog, hub  # noqa: F401 - fixture

from lape_hub.cards import catalog_card, size_category
from lape_hub.publisher import publish_catalog

REPO = "alice/lape-catalog"


def test_size_categories_buckets():
    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 999_999, 10**6)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M"]


def test_card_metadata(tmp_path):
    cat = build_catalog(tmp_path / "cat")
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in (tmp_path / "cat").rglob("*.parquet"))
    data = catalog_card(cat, repo_id=REPO).data.to_dict()
    assert data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == [size_category(rows)]
    assert {c["config_name"] for c in data["configs"]} == {"activation_counts", "neurons"}


def test_load_dataset_reads_each_config_of_the_staged_tree(hub, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    cat = build_catalog(tmp_path / "cat")
    staged = tmp_path / "staged"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds-cache"))
    publish_catalog(cat, REPO, dry_run=staged)
    for table in ("neurons", "activation_counts"):
        ds = datasets.load_dataset(str(staged), table, split="train",
                                   cache_dir=str(tmp_path / "ds-cache"))
        want = sum(pq.ParquetFile(p).metadata.num_rows
                   for p in (tmp_path / "cat" / table).rglob("*.parquet"))
        assert ds.num_rows == want > 0
        assert {"model", "lang"} <= set(ds.column_names)


def test_dry_run_with_no_hub_reachable_stages_against_nothing(hub, tmp_path, monkeypatch):
    cat = build_catalog(tmp_path / "cat")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")     # nothing listens there
    result = publish_catalog(cat, REPO, dry_run=tmp_path / "staged", backoff=0.01)
    assert "Hub unreachable: compared with nothing" in result.plan.message
    assert (tmp_path / "staged" / "README.md").is_file()
    staged = {p.relative_to(tmp_path / "staged").as_posix()
              for p in (tmp_path / "staged").rglob("*.parquet")}
    assert staged == {p.relative_to(cat.root).as_posix() for p in cat.root.rglob("*.parquet")}
    monkeypatch.delenv("HF_TOKEN")
    from lape_hub.errors import HubError
    with pytest.raises(HubError):
        publish_catalog(cat, REPO, backoff=0.01, token="hf_x")   # a real publish still fails
