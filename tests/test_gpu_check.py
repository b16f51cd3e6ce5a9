"""benchmarks/gpu_check.sh on a machine without CUDA: it says so and exits 0; and every code
path of benchmarks/gpu_check.py runs on the CPU with a tiny model (counting vs a reference,
Jaccard, throughput + MFU arithmetic, the fine-tuning benchmark)."""
from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from _tiny_models import save_tiny

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "g.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "CUDA is not available" in r.stdout
    assert json.loads(out.read_text())["cuda_available"] is False


def test_peak_and_flops_arithmetic():
    mod = _module()
    assert mod.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert mod.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert mod.peak_tflops("Some GPU") is None
    from _tiny_models import tiny_model

    model = tiny_model("llama")
    c = model.config
    emb = c.vocab_size * c.hidden_size
    n = sum(p.numel() for p in model.parameters()) - 2 * emb  # untied embedding and head
    assert mod.flops_per_token(model, 64) == 2 * n + 2 * c.num_hidden_layers * 64 * c.hidden_size
    assert mod.jaccard({1, 2, 3}, {2, 3, 4}) == 0.5


@pytest.mark.slow
def test_every_code_path_runs_on_cpu_with_a_tiny_model(tmp_path):
    base = save_tiny("llama", tmp_path / "tiny")
    rng = random.Random(0)
    langs = ["mlt_Latn", "afr_Latn", "isl_Latn"]
    for k, lang in enumerate(langs):
        (tmp_path / "corpus" / lang).mkdir(parents=True)
        letters = "abcdefghij"[3 * k:3 * k + 5]  # partly different alphabets per language
        lines = ["index_id\tcategory\ttext"] + [
            f"{i}\tnone\t" + " ".join("".join(rng.choice(letters) for _ in range(5)) for _ in range(8))
            for i in range(30)]
        (tmp_path / "corpus" / lang / "train.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "g.json"
    rc = _module().main(["--device", "cpu", "--model", str(base), "--corpus", str(tmp_path / "corpus"),
                         "--langs", ",".join(langs), "--max-tokens", "600", "--seq-len", "32",
                         "--batch-size", "4", "--throughput-rows", "8", "--peak-tflops", "1",
                         "--ft-models", str(base), "--ft-steps", "1", "--ft-batch", "1", "--ft-timeout", "900",
                         "--ft-variants", "sparse:float32:chunked,clone:float32:chunked",  # 2 processes: fast enough
                         "--ft-seq-len", "16", "--threads", "1", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    cnt = doc["counting"]
    assert set(cnt["langs"]) == set(langs)
    # float32 on CPU against float32 on CPU: the same counts, so the same sets
    assert all(v["jaccard"] == 1.0 and v["same_tokens"] and v["max_abs_dp"] == 0.0 for v in cnt["langs"].values())
    tp = doc["counting_throughput"]
    assert tp["tokens"] == 8 * 32 and tp["tokens_per_s"] > 0
    assert tp["mfu"] == pytest.approx(tp["tokens_per_s"] * tp["flops_per_token"] / 1e12)
    ft = doc["finetune"]
    assert "error" not in ft, ft
    assert [r["variant"] for r in ft["rows"]] == ["sparse:float32:chunked", "clone:float32:chunked"]
    assert [r["trainable_params"] for r in ft["rows"]] == [ft["rows"][0]["set_params"]] * 2
    assert "sparse_vs_clone_step" in ft["ratios"][0]
