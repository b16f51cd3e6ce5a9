"""lm-eval wiring, offline: a multiple-choice task defined on local JSON files runs through
``simple_evaluate`` + ``HFLM`` on a model in memory; Hub tasks are skipped with a reason."""
from __future__ import annotations

from pathlib import Path

import pytest

from _tiny_models import tiny_model, tiny_tokenizer

pytest.importorskip("lm_eval")
FIX = Path(__file__).parent / "fixtures" / "eval" / "lm_eval"

YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture
def include(tmp_path):
    (tmp_path / "tiny_mc.yaml").write_text(YAML.format(data=FIX / "tiny_mc.jsonl"))
    return tmp_path


def test_local_task_runs_and_matches_our_loglik_scoring(include, monkeypatch):
    import json

    from lape_hub.evaluation.general import run_lm_eval
    from lape_hub.evaluation.tasks import sequence_logprobs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = tiny_model("llama", seed=2), tiny_tokenizer()
    results, skipped = run_lm_eval(model, tok, ["tiny_mc"], include=include, batch_size=4)
    assert skipped == {}
    (acc,) = [r for r in results if r.metric == "acc"]
    assert acc.task == "general" and acc.direction == "tiny_mc" and acc.n == 4
    assert acc.dataset == "json" and acc.metric_signature.startswith("lm-eval:")
    # the same choice by our own log-likelihood scoring
    docs = [json.loads(line) for line in (FIX / "tiny_mc.jsonl").read_text().splitlines()]
    correct = 0
    for d in docs:
        ctx = f"Question: {d['question']}\nAnswer:"
        s = sequence_logprobs(model, tok, [(ctx, " " + c) for c in d["choices"]])
        correct += int(max(range(len(s)), key=s.__getitem__) == d["label"])
    assert acc.value == pytest.approx(100 * correct / len(docs))


def test_hub_tasks_are_skipped_offline_with_a_reason(include, monkeypatch):
    from lape_hub.evaluation.general import run_lm_eval

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = tiny_model("llama"), tiny_tokenizer()
    monkeypatch.setattr("lape_hub.evaluation.general._task_manager",
                        lambda names, inc: _FakeTM(include))
    results, skipped = run_lm_eval(model, tok, ["arc_easy"], include=include)
    assert results == [] and "unreachable (HF_HUB_OFFLINE is set)" in skipped["arc_easy"]


class _FakeTM:
    """Stands in for lm-eval's full task index (indexing its thousands of YAML files takes
    a minute on a busy machine): arc_easy is known, its YAML outside the include folder."""

    def __init__(self, include):
        self.all_tasks = ["arc_easy"]
        self.task_index = {"arc_easy": _Entry()}


class _Entry:
    yaml_path = "/site-packages/lm_eval/tasks/arc/arc_easy.yaml"
