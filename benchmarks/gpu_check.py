"""The GPU check behind ``benchmarks/gpu_check.sh``: counting in bfloat16 on CUDA against the
catalog's CPU counts, counting throughput and MFU, and the fine-tuning step benchmark on CUDA.

Phases (each figure goes into one JSON):

1. **environment**: torch, CUDA, the GPU's name and its bf16 dense peak (H100 SXM
   989 TFLOP/s, H100 PCIe 756, H200 989, A100 312; ``--peak-tflops`` overrides). Without
   CUDA it says so, writes ``{"cuda_available": false}`` and exits 0.
2. **counting fidelity**: three languages of the model counted in bfloat16 on the GPU with
   the exact settings of the catalog's stored CPU counts (corpus, token budget, sequence
   length, BOS rule, read from the entry's params), then LAPE selected over the reference
   set twice, once with the catalog's counts and once with the three GPU columns swapped
   in; per language the Jaccard similarity of the two neuron sets and max |Δp|.
3. **counting throughput**: :func:`lape_hub.activation_counts.count_activations` on
   random ids (``--throughput-rows`` rows of ``seq_len``) after a warm-up; tokens/s and MFU =
   tokens/s x FLOPs/token / peak, FLOPs/token = 2 x (non-embedding parameters) +
   2 x layers x seq_len x (heads x head_dim) (attention scores and values, causal half).
4. **fine-tuning step**: ``benchmarks/bench_finetune.py --device cuda`` with sparse,
   clone-and-write and LoRA (bf16 autocast, chunked loss) and today's float32 step.

``--device cpu --model <folder> --corpus <folder>`` runs every code path on the CPU (the
test does that with a tiny model); the reference counts are then computed on the CPU in
float32 when the catalog has none.

    python benchmarks/gpu_check.py --out gpu_check.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: bf16 dense tensor-core peaks (TFLOP/s, no sparsity), from NVIDIA's data sheets
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0,
                    "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU by its name (longest matching key), or None.

    >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("NVIDIA H100 PCIe")
    (989.0, 756.0)
    """
    hits = [k for k in PEAK_BF16_TFLOPS if k in device_name]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


def flops_per_token(model, seq_len: int) -> float:
    """Forward FLOPs per token of the decoder trunk (no LM head; counting runs the trunk)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    skip = {id(emb)} | ({id(head.weight)} if head is not None else set())
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if id(p) not in skip)
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", 0)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // max(heads, 1)
    return 2.0 * n + 2.0 * cfg.num_hidden_layers * seq_len * heads * head_dim


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def count_langs(model, tokenizer, corpus: str, langs: list[str], *, split: str, seq_len: int,
                max_tokens: int | None, bos: str, batch_size: int, device: str) -> dict:
    """{lang: (over_zero [layers, d_ffn], n_tokens, seconds)} counted as ``build`` does."""
    import numpy as np

    from lape_hub.activation_counts import count_activations
    from lape_hub.corpus import read_documents, tokenize_and_pack

    skip_id = tokenizer.bos_token_id if bos == "skip" else None
    out = {}
    for lang in langs:
        packed = tokenize_and_pack(read_documents(corpus, lang, split), tokenizer, seq_len, max_tokens, lang=lang)
        _sync(device)
        t = time.perf_counter()
        c = count_activations(model, packed, batch_size=batch_size, progress=False, skip_token_id=skip_id)
        _sync(device)
        out[lang] = (np.asarray(c.over_zero), int(c.n_tokens), time.perf_counter() - t)
    return out


def reference(model_name: str, refset: str, langs: list[str]):
    """The catalog's stored counts of ``model_name`` for ``refset`` (float32, CPU) and how
    they were counted; None when the catalog has none."""
    from lape_hub.builder import model_revision, parse_corpus_id, read_counts, stored_corpora
    from lape_hub.catalog import Catalog, first_row
    from lape_hub.errors import LapeHubError
    from lape_hub.registry import resolve_model, resolve_refset

    try:
        spec = resolve_model(model_name)
        ref_langs = list(resolve_refset(refset).langs)
        cat = Catalog()
        rev = model_revision(spec)
        corpora = stored_corpora(cat, spec.alias, revision=rev)
    except LapeHubError:
        return None
    for cid, have in sorted(corpora.items(), key=lambda kv: -len(kv[1])):
        key = parse_corpus_id(cid)
        if key is None or key.dtype != "float32" or not set(ref_langs) | set(langs) <= have:
            continue
        stored = read_counts(cat, spec.alias, ref_langs + [x for x in langs if x not in ref_langs],
                             revision=rev, corpus=cid)
        entry = next(iter(cat.entries("activation_counts", model=spec.alias, revision=rev, corpus=cid)))
        params = json.loads(first_row(entry.path, ["params"])["params"] or "{}")
        return {"corpus_id": cid, "key": key, "seq_len": int(params.get("seq_len", 512)),
                "langs": stored.langs, "over_zero": stored.over_zero, "n_tokens": stored.n_tokens}
    return None


def compare_sets(ref: dict, new: dict, langs: list[str]) -> dict:
    """LAPE over ``ref['langs']`` from the reference counts and with ``new``'s columns swapped in."""
    import numpy as np

    from lape_hub.lape import activation_probs, select_lape

    over, n_tok = ref["over_zero"].copy(), ref["n_tokens"].copy()
    mixed_over, mixed_n = over.copy(), n_tok.copy()
    for lang in langs:
        k = ref["langs"].index(lang)
        mixed_over[:, :, k], mixed_n[k] = new[lang][0], new[lang][1]
    a, b = select_lape(over, n_tok), select_lape(mixed_over, mixed_n)
    pa, pb = activation_probs(over, n_tok), activation_probs(mixed_over, mixed_n)
    out = {}
    for lang in langs:
        k = ref["langs"].index(lang)
        sa, sb = set(a.neurons(k)), set(b.neurons(k))
        out[lang] = {"jaccard": round(jaccard(sa, sb), 4), "n_ref": len(sa), "n_new": len(sb),
                     "max_abs_dp": float(np.abs(pa[:, :, k] - pb[:, :, k]).max()),
                     "same_tokens": int(n_tok[k]) == int(new[lang][1])}
    return out


def throughput(model, *, rows: int, seq_len: int, batch_size: int, device: str, vocab: int) -> dict:
    import torch

    from lape_hub.activation_counts import count_activations
    from lape_hub.corpus import PackedCorpus

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, vocab, (rows, seq_len), generator=g)
    packed = PackedCorpus(ids, torch.ones_like(ids), n_documents=rows, n_tokens=int(ids.numel()))
    warm = PackedCorpus(ids[:batch_size], torch.ones_like(ids[:batch_size]), n_documents=batch_size,
                        n_tokens=int(ids[:batch_size].numel()))
    count_activations(model, warm, batch_size=batch_size, progress=False)
    _sync(device)
    t = time.perf_counter()
    c = count_activations(model, packed, batch_size=batch_size, progress=False)
    _sync(device)
    seconds = time.perf_counter() - t
    return {"tokens": int(c.n_tokens), "seconds": round(seconds, 3), "tokens_per_s": c.n_tokens / seconds}


def finetune_bench(device: str, models: str, args, out_json: Path) -> dict:
    variants = args.ft_variants
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_finetune.py"), "--device", device,
           "--models", models, "--variants", variants, "--rounds", "1", "--steps", str(args.ft_steps),
           "--warmup", "1", "--batch-size", str(args.ft_batch), "--seq-len", str(args.ft_seq_len),
           "--threads", str(args.threads), "--json", str(out_json)]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.ft_timeout,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.ft_timeout} s"}
    print(r.stdout.rstrip())
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    doc = json.loads(out_json.read_text())
    doc["seconds"] = round(time.perf_counter() - t, 1)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--refset", default="paper-12")
    ap.add_argument("--langs", default="mlt_Latn,afr_Latn,isl_Latn")
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "sib200"))
    ap.add_argument("--batch-size", type=int, default=64, help="counting rows per forward")
    ap.add_argument("--throughput-rows", type=int, default=1024)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--ft-models", default="gemma-3-270m,llama-1024")
    ap.add_argument("--ft-variants", default="sparse:float32:plain,sparse:bfloat16:chunked,clone:bfloat16:chunked,"
                    "lora:bfloat16:chunked", help="bench_finetune.py variants (METHOD:DTYPE:LOSS)")
    ap.add_argument("--ft-steps", type=int, default=10)
    ap.add_argument("--ft-batch", type=int, default=8)
    ap.add_argument("--ft-seq-len", type=int, default=512)
    ap.add_argument("--ft-timeout", type=int, default=300)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512, help="when the catalog has no reference counts")
    ap.add_argument("--max-tokens", type=int, default=16384, help="when the catalog has no reference counts")
    args = ap.parse_args(argv)
    t_all = time.perf_counter()
    out_path = Path(args.out)

    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": args.device,
           "cuda_available": torch.cuda.is_available()}
    report: dict = {"environment": env}
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print(f"CUDA is not available (torch {torch.__version__}): nothing to check here; "
                  "run this on a machine with a GPU")
            out_path.write_text(json.dumps({"cuda_available": False, "environment": env}, indent=2) + "\n")
            return 0
        name = torch.cuda.get_device_name(0)
        env.update(gpu=name, cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
        env["peak_bf16_tflops"] = args.peak_tflops or peak_tflops(name)
    else:
        env["peak_bf16_tflops"] = args.peak_tflops
    print(f"environment: {json.dumps(env)}")

    from lape_hub.models import load_model

    langs = [x for x in args.langs.split(",") if x]
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    # -- 2. counting fidelity --------------------------------------------------------------
    ref = reference(args.model, args.refset, langs)
    model, tok = load_model(args.model, device=args.device, dtype=dtype)
    if ref is not None:
        key = ref["key"]
        split, max_tokens, bos, seq_len, ref_source = key.split, key.max_tokens, key.bos, ref["seq_len"], \
            f"catalog {ref['corpus_id']} (float32, CPU)"
    else:  # no stored counts (a local model): reference counted now, on the CPU in float32
        split, max_tokens, bos, seq_len = "train", args.max_tokens, "count", args.seq_len
        cpu_model, _ = load_model(args.model, device="cpu", dtype="float32")
        got = count_langs(cpu_model, tok, args.corpus, langs, split=split, seq_len=seq_len,
                          max_tokens=max_tokens, bos=bos, batch_size=8, device="cpu")
        del cpu_model
        import numpy as np

        ref = {"langs": langs, "over_zero": np.stack([got[x][0] for x in langs], axis=-1),
               "n_tokens": np.array([got[x][1] for x in langs])}
        ref_source = "counted now on the CPU in float32 (no catalog counts for this model)"
    new = count_langs(model, tok, args.corpus, langs, split=split, seq_len=seq_len, max_tokens=max_tokens,
                      bos=bos, batch_size=args.batch_size, device=args.device)
    sets = compare_sets(ref, new, langs)
    n_tok = sum(v[1] for v in new.values())
    secs = sum(v[2] for v in new.values())
    report["counting"] = {"model": args.model, "dtype": dtype, "device": args.device, "reference": ref_source,
                          "langs": sets, "tokens": n_tok, "seconds": round(secs, 3),
                          "tokens_per_s_3_langs": n_tok / secs if secs else None}
    for lang, d in sets.items():
        print(f"counting {lang}: Jaccard {d['jaccard']:.3f} vs reference ({d['n_new']} vs {d['n_ref']} neurons), "
              f"max |dp| {d['max_abs_dp']:.4f}, same tokens: {d['same_tokens']}")

    # -- 3. counting throughput and MFU ----------------------------------------------------
    vocab = model.get_input_embeddings().weight.shape[0]
    tp = throughput(model, rows=args.throughput_rows, seq_len=seq_len, batch_size=args.batch_size,
                    device=args.device, vocab=vocab)
    fpt = flops_per_token(model, seq_len)
    tp["flops_per_token"] = fpt
    peak = env.get("peak_bf16_tflops")
    tp["mfu"] = tp["tokens_per_s"] * fpt / (peak * 1e12) if peak else None
    report["counting_throughput"] = tp
    mfu = f", MFU {100 * tp['mfu']:.1f} % of {peak:.0f} TFLOP/s bf16 dense" if tp["mfu"] is not None else ""
    print(f"counting throughput: {tp['tokens_per_s']:,.0f} tokens/s ({fpt / 1e6:.0f} MFLOP/token){mfu}")
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()

    # -- 4. fine-tuning step -----------------------------------------------------------------
    report["finetune"] = finetune_bench(args.device, args.ft_models, args, out_path.with_suffix(".finetune.json"))
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    out_path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {out_path} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
