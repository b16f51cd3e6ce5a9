"""Step time and memory of sparse neuron fine-tuning vs the paper's approach, full FT and LoRA,
in float32 and bfloat16 autocast, with the plain loss (full logits) and the chunked one.

Methods, all with AdamW, batch 2, the same random tokens and the same neuron set:

- ``sparse``: lape-hub's deltas on the frozen projections' outputs (lape_hub.sparse_adapter);
- ``clone``: the paper's public-code approach: every forward clones gate/up/down, writes the
  trainable rows/columns into the clones and multiplies with them (autograd then computes a
  full-size weight gradient for each clone and gathers the trainable rows from it);
- ``full``: full fine-tuning;
- ``lora``: LoRA on gate/up/down, rank matched to the neuron set's parameter count (exact).

A *variant* is ``method:dtype:loss``: ``dtype`` float32 or bfloat16 (autocast; weights,
trainable tensors and optimizer state stay float32), ``loss`` ``plain`` (the model's
``[batch, seq, vocab]`` logits, then cross-entropy: what lape-hub did before) or ``chunked``
(:mod:`lape_hub.lm_loss`, never the full logits). ``sparse:float32:plain`` is the
baseline the other rows are compared with ("today's step").

Each (model, variant) runs in its own subprocess, so peak memory is that process's peak RSS
during the training steps (``/proc/self/status`` VmHWM, reset before the first step) minus
its RSS with the model loaded (on CUDA: ``torch.cuda.max_memory_allocated`` above the
model). "state" is what training keeps per trainable parameter: the parameters, their
gradients and AdamW's two moments, as measured on the tensors.

Usage::

    python benchmarks/bench_finetune.py                       # llama-1024 and gemma-3-270m
    python benchmarks/bench_finetune.py --models llama-1024 --steps 3 --json bench.json
    python benchmarks/bench_finetune.py --device cuda --variants sparse:bfloat16:chunked,clone:bfloat16:chunked
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("sparse", "clone", "full", "lora")
BASELINE = "sparse:float32:plain"
DEFAULT_VARIANTS = {
    "llama-1024": ["sparse:float32:plain", "sparse:float32:chunked", "sparse:bfloat16:chunked",
                   "clone:float32:chunked", "clone:bfloat16:chunked", "lora:float32:chunked"],
    "gemma-3-270m": ["sparse:float32:plain", "sparse:float32:chunked", "sparse:bfloat16:chunked",
                     "clone:float32:chunked", "lora:float32:chunked"],
}


# ----------------------------------------------------------------------------- worker side
def _mem_kib() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build_model(name: str, seed: int = 0, device: str = "cpu"):
    """``llama-1024``: a random-init Llama where the FFN dominates; else a lape-hub model."""
    import torch

    if name == "llama-1024":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=8192, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
                          num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=1024,
                          tie_word_embeddings=False)
        return LlamaForCausalLM(cfg).float().to(device), None
    from lape_hub.models import load_model

    return load_model(name, device=device)


def neuron_set_for(name: str, model, share: float, seed: int = 0):
    """The catalog's Maltese set for a registry model when present, else ``share`` of each layer."""
    import numpy as np

    from lape_hub.ffn import find_ffn_layers
    from lape_hub.neuron_set import NeuronSet

    if name != "llama-1024":
        try:
            from lape_hub.catalog import Catalog

            return Catalog().neuron_set(name, "mlt_Latn", refset="paper-12"), "catalog mlt_Latn paper-12"
        except Exception:  # noqa: BLE001 - any failure: fall back to a random set
            pass
    layers = find_ffn_layers(model)
    rng = np.random.default_rng(seed)
    k = max(1, int(round(share * layers[0].d_ffn)))
    idx = [np.sort(rng.choice(layers[0].d_ffn, size=k, replace=False)) for _ in layers]
    return (NeuronSet(name, "mlt_Latn", idx, d_model=layers[0].d_model, d_ffn=layers[0].d_ffn),
            f"random {share:.1%} of each layer")


def install_clone_write(model, neuron_set):
    """The paper's approach: trainable rows/cols written into per-forward clones of W."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from lape_hub.ffn import find_ffn_layers

    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for layer in find_ffn_layers(model):
        idx = torch.as_tensor(neuron_set.layers[layer.index], dtype=torch.long, device=layer.gate.weight.device)
        if not len(idx):
            continue
        g = nn.Parameter(layer.gate.weight.detach()[idx].clone())
        u = nn.Parameter(layer.up.weight.detach()[idx].clone())
        d = nn.Parameter(layer.down.parameter.detach()[:, idx].clone())
        params += [g, u, d]

        def forward(x, _l=layer, _i=idx, _g=g, _u=u, _d=d):
            if _l.layout == "separate":
                wg, wu = _l.gate.parameter.clone(), _l.up.parameter.clone()
                wg[_i], wu[_i] = _g, _u
                gate, up = F.linear(x, wg), F.linear(x, wu)
            else:
                w = _l.gate.parameter.clone()
                w[_i], w[_i + _l.d_ffn] = _g, _u
                gate, up = F.linear(x, w).chunk(2, dim=-1)
            wd = _l.down.parameter.clone()
            wd[:, _i] = _d
            return F.linear(_l.act(gate) * up, wd)

        layer.mlp.forward = forward
    return params


def setup(method: str, model, neuron_set):
    """Return (module to call, trainable parameters, extra info)."""
    from lape_hub.finetune import lora_params_per_rank, lora_targets, matched_lora_rank
    from lape_hub.sparse_adapter import AdapterConfig, SparseNeuronModel

    if method == "sparse":
        sp = SparseNeuronModel.inject(model, neuron_set.layers, AdapterConfig("bench", "mlt_Latn", "lape-sparse"))
        return model, sp.parameters(), {}
    if method == "clone":
        return model, install_clone_write(model, neuron_set), {}
    if method == "full":
        params = list({id(p): p for p in model.parameters()}.values())
        for p in params:
            p.requires_grad_(True)
        return model, params, {}
    from peft import LoraConfig, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    rank = matched_lora_rank(neuron_set.trainable_params, lora_params_per_rank(model))
    pm = get_peft_model(model, LoraConfig(r=rank, lora_alpha=32, target_modules=lora_targets(model)))
    return pm, [p for p in pm.parameters() if p.requires_grad], {"lora_rank": rank}


def worker(args: argparse.Namespace) -> dict:
    import torch

    from lape_hub.finetune import autocast, lm_loss

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    model, _ = build_model(args.model, device=args.device)
    ns, ns_source = neuron_set_for(args.model, model, args.share)
    vocab = model.get_input_embeddings().weight.shape[0]
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    module, params, info = setup(args.method, model, ns)
    module.train()
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=g).to(args.device)
               for _ in range(args.warmup + args.steps)]
    mask = torch.ones(args.batch_size, args.seq_len, dtype=torch.long, device=args.device)
    import gc

    with torch.no_grad():  # page in memory-mapped weights now, so the peak is the step's, not the file's
        for p in {id(p): p for p in model.parameters()}.values():
            p.sum()
    gc.collect()
    rss0 = _mem_kib()["VmRSS"]
    peak_ok = _reset_peak()
    if cuda:
        torch.cuda.synchronize()
        cuda0 = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        peak_ok = True
    times = []
    for i, ids in enumerate(batches):
        t = time.perf_counter()
        with autocast(args.device, args.dtype):
            nll, n = lm_loss(module, ids, mask, chunked=args.loss == "chunked")
        (nll / n).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if i == len(batches) - 1:  # gradients + optimizer state, measured on the tensors
            state_bytes = sum(p.numel() * p.element_size() * 2 for p in params)  # param + grad
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    state_bytes += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                       if torch.is_tensor(t) and t.ndim > 0)
    mem = _mem_kib()
    peak = (mem["VmHWM"] - rss0) / 1024 if peak_ok else None
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - cuda0) / 2**20
    return {
        "model": args.model, "method": args.method, "dtype": args.dtype, "loss": args.loss,
        "variant": f"{args.method}:{args.dtype}:{args.loss}", "device": args.device,
        "neuron_set": ns_source, "n_neurons": ns.n_neurons,
        "set_params": ns.trainable_params, "total_params": total,
        "trainable_params": sum(p.numel() for p in params), "state_mib": state_bytes / 2**20,
        "step_s": statistics.median(times), "step_s_all": times,
        "peak_mib": peak,
        "tokens_per_step": args.batch_size * args.seq_len, **info,
    }


# ----------------------------------------------------------------------------- driver side
def run_one(model: str, variant: str, args: argparse.Namespace) -> dict:
    method, dtype, loss = parse_variant(variant)
    cmd = [sys.executable, __file__, "--worker", "--model", model, "--method", method, "--dtype", dtype,
           "--loss", loss, "--device", args.device,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--seq-len", str(args.seq_len),
           "--batch-size", str(args.batch_size), "--share", str(args.share), "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{model}/{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_variant(text: str) -> tuple[str, str, str]:
    """``"sparse:bfloat16:chunked"`` -> its parts (dtype and loss default to float32, chunked)."""
    parts = text.split(":") + ["", ""]
    method, dtype, loss = parts[0], parts[1] or "float32", parts[2] or "chunked"
    if method not in METHODS or dtype not in ("float32", "bfloat16") or loss not in ("plain", "chunked"):
        raise SystemExit(f"bad variant {text!r}: use METHOD[:float32|bfloat16[:plain|chunked]], METHOD in {METHODS}")
    return method, dtype, loss


def gemma_available() -> bool:
    try:
        from lape_hub.models import model_cache_dir

        return (model_cache_dir("gemma-3-270m") / "lape_hub_source.json").is_file()
    except Exception:  # noqa: BLE001
        return False


def print_table(model: str, rows: list[dict], args: argparse.Namespace) -> None:
    first = rows[0]
    print(f"\n{model}: {first['total_params'] / 1e6:.1f}M params, neuron set: {first['neuron_set']} "
          f"({first['n_neurons']} neurons, {first['set_params'] / 1e6:.2f}M params), "
          f"batch {args.batch_size} x {args.seq_len} tokens, {args.threads} threads, {args.device}")
    print(f"  {'variant':<24} {'step s':>8} {'tok/s':>8} {'trainable':>12} {'state MiB':>10} {'peak MiB':>9}")
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "n/a"
        extra = f"  (rank {r['lora_rank']})" if "lora_rank" in r else ""
        print(f"  {r['variant']:<24} {r['step_s']:8.3f} {r['tokens_per_step'] / r['step_s']:8.0f} "
              f"{r['trainable_params']:12,d} {r['state_mib']:10.1f} {peak:>9}{extra}")


def ratios(rows: list[dict]) -> list[dict]:
    """Every variant against the baseline (today's step) and sparse against clone-and-write
    at the same dtype and loss; ``None`` where a side is missing."""
    by = {r["variant"]: r for r in rows}
    out = []
    base = by.get(BASELINE)
    for r in rows:
        d = {"model": r["model"], "variant": r["variant"]}
        if base and r is not base:
            d["speedup_vs_baseline"] = base["step_s"] / r["step_s"]
            if r["peak_mib"] and base["peak_mib"]:
                d["peak_vs_baseline"] = r["peak_mib"] / base["peak_mib"]
        if r["method"] == "sparse":
            clone = by.get(f"clone:{r['dtype']}:{r['loss']}")
            if clone:
                d["sparse_vs_clone_step"] = r["step_s"] / clone["step_s"]
        if len(d) > 2:
            out.append(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-1024,gemma-3-270m")
    ap.add_argument("--variants", default=None,
                    help="comma-separated METHOD:DTYPE:LOSS (default: a per-model set, see DEFAULT_VARIANTS)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="repeat every variant, interleaved; the fastest median is kept")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--share", type=float, default=0.01, help="neurons per layer when no catalog set exists")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--loss", default="chunked", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    models = [m for m in args.models.split(",") if m]
    if "gemma-3-270m" in models and not gemma_available():
        print("gemma-3-270m: no cached conversion (run lape_hub.models.load_model('gemma-3-270m') once); skipped")
        models.remove("gemma-3-270m")
    results: list[dict] = []
    for model in models:
        variants = ([v for v in args.variants.split(",") if v] if args.variants
                    else DEFAULT_VARIANTS.get(model, DEFAULT_VARIANTS["llama-1024"]))
        variants = [":".join(parse_variant(v)) for v in variants]
        best: dict[str, dict] = {}
        for _ in range(args.rounds):  # interleaved, so a busy machine hurts every variant alike
            for v in variants:
                r = run_one(model, v, args)
                if v not in best or r["step_s"] < best[v]["step_s"]:
                    best[v] = r
        rows = [best[v] for v in variants]
        results += rows
        print_table(model, rows, args)
        for d in ratios(rows):
            parts = [f"{k.replace('_', ' ')} {v:.2f}x" for k, v in d.items() if k not in ("model", "variant")]
            print(f"  {d['variant']:<24} " + "   ".join(parts))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": results, "ratios": [d for m in models for d in ratios(
            [r for r in results if r["model"] == m])]}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
