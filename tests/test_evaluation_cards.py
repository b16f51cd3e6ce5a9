"""Eval results in the adapter card: model-index entries with real Hub dataset ids and split
names (rendered by huggingface_hub), and the paper-style comparison table."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest


def _row(run_id, method, task, direction, metric, value, split="test", ci=(1.0, 2.0)):
    ds = {"translation": "openlanguagedata/flores_plus", "topic": "Davlan/sib200",
          "perplexity": "openlanguagedata/flores_plus"}[task]
    return {"model": "gemma-3-270m", "run_id": run_id, "method": method, "lang": "mlt_Latn",
            "task": task, "direction": direction, "metric": metric, "split": split,
            "value": value, "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
            "dataset": ds, "dataset_config": direction, "metric_signature": f"sig-{metric}",
            "n_examples": 16}


ROWS = [
    _row("base", "base", "translation", "mlt_Latn->eng_Latn", "chrf++", 19.2, ci=(17.0, 21.5)),
    _row("abc123def456", "lape-sparse", "translation", "mlt_Latn->eng_Latn", "chrf++", 23.4,
         ci=(21.0, 25.9)),
    _row("fff000111222", "lora", "translation", "mlt_Latn->eng_Latn", "chrf++", 22.0),
    _row("abc123def456", "lape-sparse", "topic", "mlt_Latn", "acc_ll", 40.0, split="dev"),
    _row("base", "base", "topic", "mlt_Latn", "acc_ll", 35.0, split="dev"),
    _row("abc123def456", "lape-sparse", "perplexity", "eng_Latn", "ppl", 21.5, ci=None),
]


def _info(tmp_path):
    from lape_hub.cards import AdapterInfo

    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "lape_adapter.json").write_text(json.dumps(
        {"format": "lape-hub-adapter", "model": "gemma-3-270m", "lang": "mlt_Latn",
         "method": "lape-sparse", "signature": "model:gemma-3-270m|method:lape-sparse"}))
    return AdapterInfo.from_dir(folder)


def test_card_model_index_uses_hub_ids_and_split_names(tmp_path):
    from huggingface_hub import ModelCard

    from lape_hub.cards import adapter_card

    card = adapter_card(_info(tmp_path), eval_rows=ROWS, run_id="abc123def456")
    parsed = ModelCard(str(card))                         # the YAML round-trips
    results = {(e.dataset_type, e.metric_type): e for e in parsed.data.eval_results}
    assert len(results) == 3                             # only this adapter's rows
    chrf = results[("openlanguagedata/flores_plus", "chrf++")]
    assert chrf.dataset_split == "devtest" and chrf.metric_value == pytest.approx(23.4)
    assert chrf.task_type == "translation" and chrf.dataset_name == "FLORES+"
    topic = results[("Davlan/sib200", "acc_ll")]
    assert topic.dataset_split == "validation" and topic.task_type == "text-classification"


def test_card_comparison_table_has_base_adapter_and_baselines(tmp_path):
    from lape_hub.cards import adapter_card, eval_comparison_table

    table = eval_comparison_table(ROWS, "abc123def456")
    header, _sep, *lines = table.splitlines()
    assert header.split(" | ")[4:6] == ["base model", "this adapter"] and "lora `fff00011`" in header
    chrf = next(line for line in lines if "chrf++" in line)
    assert "19.20 [17.0, 21.5]" in chrf and "23.40 [21.0, 25.9]" in chrf and "22.00" in chrf
    ppl = next(line for line in lines if "ppl" in line)
    assert "21.50 |" in ppl and "—" in ppl                  # no base row: a dash
    assert eval_comparison_table(ROWS, "not-evaluated") == ""
    body = str(adapter_card(_info(tmp_path), eval_rows=ROWS, run_id="abc123def456"))
    assert "## Comparison" in body and table in body
    assert "## Comparison" not in str(adapter_card(_info(tmp_path)))


def test_adapter_run_id_from_catalog_and_card_rows(tmp_path):
    from lape_hub.catalog import Catalog
    from lape_hub.digest import artifact_sha256
    from lape_hub.evaluation.results import adapter_eval_rows, adapter_run_id, record_evals

    info = _info(tmp_path)
    cat = Catalog(tmp_path / "cat")
    assert adapter_run_id(info.path) == artifact_sha256(info.path)[:12]
    full = _full(ROWS)
    english = []       # the forgetting check: the systems evaluated on English
    for run, method in (("base", "base"), ("abc123def456", "lape-sparse"), ("0thertarget0", "lora")):
        r = _row(run, method, "topic", "eng_Latn", "acc_ll", 30.0)
        r["lang"] = "eng_Latn"
        english.append(r)
    english.append({**english[0], "task": "translation", "direction": "eng_Latn->fra_Latn",
                    "metric": "chrf++"})
    record_evals(full + _full(english), cat)
    run_id, rows = adapter_eval_rows(info.path, "gemma-3-270m", "mlt_Latn", cat)
    assert run_id == artifact_sha256(info.path)[:12]
    assert len(rows) == len(ROWS) + 2          # + base's and lape-sparse's English topic rows
    assert sorted(r["run_id"] for r in rows if r["lang"] == "eng_Latn") == ["abc123def456", "base"]
    assert {r["task"] for r in rows if r["lang"] == "eng_Latn"} == {"topic"}
    _, english_only = adapter_eval_rows(info.path, "gemma-3-270m", "eng_Latn", cat)
    assert len(english_only) == len(english)   # an English adapter: its own rows, no doubling


def _full(rows, **extra):
    from lape_hub.schemas import table_schema

    out = []
    for r in rows:
        row = {c: None for c in table_schema("evals").columns}
        row.update(r, revision="r", value=float(r["value"]), seconds=0.0, signature="s",
                   lape_hub_version="0", params="{}", created_at=datetime.now(timezone.utc))
        row.update(extra)
        out.append(row)
    return out


def test_catalog_card_summarises_every_evaluated_run(tmp_path):
    import pyarrow as pa

    from lape_hub.cards import catalog_card
    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.results import record_evals
    from lape_hub.schemas import table_schema

    cat = Catalog(tmp_path / "cat")
    cat.root.mkdir()
    body = str(catalog_card(cat, repo_id="a/b"))
    assert "## Evaluation results" in body and "the `evals` table is empty" in body
    english = _full([_row("abc123def456", "lape-sparse", "topic", "eng_Latn", "acc_ll", 61.0),
                     _row("base", "base", "topic", "eng_Latn", "acc_ll", 64.0)],
                    lang="eng_Latn")
    record_evals(_full(ROWS) + english, cat)
    schema = table_schema("adapters")
    adapter = {c: None for c in schema.columns}
    adapter.update(model="gemma-3-270m", lang="mlt_Latn", method="lape-sparse",
                   run_id="abc123def456", revision="r", repo_id="google/gemma-3-270m",
                   trainable_params=36864, share=0.1, tokens=1000, steps=1, best_step=1,
                   best_val_loss=2.0, artifact_path="x", artifact_sha256="0" * 64,
                   signature="s", lape_hub_version="0", created_at=datetime.now(timezone.utc),
                   params=json.dumps({"hyperparameters": {"seed": 3}}))
    cat.write("adapters", pa.Table.from_pylist([adapter], schema=schema.arrow))
    body = str(catalog_card(cat, repo_id="a/b"))
    section = body.split("## Evaluation results")[1].split("## Tables")[0]
    lines = [l for l in section.splitlines() if l.startswith("| gemma-3-270m")]
    # base, lape-sparse, lora: one line each (test split; lape-sparse's topic is dev only)
    assert [l.split(" | ")[2] for l in lines] == ["base", "lape-sparse", "lora"]
    base, sparse, lora = (l.split(" | ") for l in lines)
    assert sparse[3] == "3" and sparse[4] == "`abc123def456`" and lora[3] == "—"
    # columns: X→en chrF++, en→X chrF++, topic acc_ll, ppl X, EN: ppl, EN: topic acc_ll
    assert sparse[6:12] == ["23.40", "—", "—", "—", "21.50", "61.00 |"]
    assert base[6] == "19.20" and base[11] == "64.00 |" and lora[6] == "22.00"
    # files that stay as the remote has them are not summarised
    skip = [e.path.relative_to(cat.root).as_posix() for e in cat.entries("evals")]
    assert "the `evals` table is empty" in str(catalog_card(cat, repo_id="a/b",
                                                            exclude_local=skip))
