"""The Maltese lape-sparse adapter that ships in adapters/ (issue 11's deliverable): its files
are the catalog's run (same sha256, run id, neuron set), its results are in the embedded
catalog, and its PEFT form loads in plain peft and gives lape-hub's logits on Gemma-3-270M."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "adapters" / "gemma-3-270m-mlt_Latn-lape-sparse"
ADAPTER = SHIPPED / "adapter"


def _run() -> dict:
    return json.loads((SHIPPED / "run.json").read_text())


def test_the_shipped_files_are_the_catalogs_run():
    from lape_hub.catalog import Catalog
    from lape_hub.digest import artifact_sha256
    from lape_hub.evaluation.results import adapter_run_id

    run_id = _run()["run_id"]
    rows = [r for r in Catalog().read("adapters", model="gemma-3-270m", lang="mlt_Latn").to_pylist()
            if r["run_id"] == run_id]
    assert len(rows) == 1
    row = rows[0]
    assert row["method"] == "lape-sparse"
    assert row["artifact_path"] == str(ADAPTER.relative_to(ROOT))
    assert row["artifact_sha256"] == artifact_sha256(ADAPTER)
    assert adapter_run_id(ADAPTER) == run_id
    small = (ADAPTER / "lape_adapter.safetensors").stat().st_size
    assert small < 2.5e6 < (ADAPTER / "adapter_model.safetensors").stat().st_size


def test_the_shipped_adapter_trains_the_catalogs_maltese_set():
    import numpy as np
    from safetensors.torch import load_file

    from lape_hub.catalog import Catalog
    from lape_hub.sparse_adapter import AdapterConfig, _neurons_from_tensors

    cfg = AdapterConfig.load(ADAPTER)
    ns = Catalog().neuron_set("gemma-3-270m", "mlt_Latn", refset="paper-12")
    assert cfg.neuron_set_hash == ns.content_hash and cfg.n_neurons == ns.n_neurons
    got = _neurons_from_tensors(load_file(ADAPTER / "lape_adapter.safetensors"), cfg)
    assert all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(got, ns.layers))


def test_its_results_are_in_the_embedded_catalog():
    from lape_hub.evaluation.results import read_evals

    rows = read_evals(run_id=_run()["run_id"], model="gemma-3-270m")
    have = {(r["lang"], r["task"], r["metric"]) for r in rows}
    for want in [("mlt_Latn", "translation", "chrf++"), ("mlt_Latn", "topic", "acc_ll"),
                 ("mlt_Latn", "perplexity", "ppl"), ("eng_Latn", "topic", "acc_ll")]:
        assert want in have, want


@pytest.mark.slow
def test_peft_loads_the_shipped_adapter_with_lape_hubs_logits():
    """Runs where the dequantized Gemma cache exists (never builds it)."""
    import peft
    import torch

    from lape_hub.models import load_model, model_cache_dir
    from lape_hub.sparse_adapter import apply_adapter

    if not (model_cache_dir("gemma-3-270m") / "config.json").is_file():
        pytest.skip("the Gemma-3-270M cache is not built here (lape-hub build builds it)")
    model, tok = load_model("gemma-3-270m")
    ids = tok("Il-Malti hija l-lingwa nazzjonali ta' Malta.", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(ids).logits
        theirs = peft.PeftModel.from_pretrained(model, str(ADAPTER))(ids).logits
    model, _ = load_model("gemma-3-270m")
    with torch.no_grad():
        ours = apply_adapter(model, ADAPTER)(ids).logits
    assert (ours - plain).abs().max() > 1e-3
    assert (theirs - ours).abs().max() <= 1e-4
