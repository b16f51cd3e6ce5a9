"""Benchmark activation counting, side by side on one model and one token sample.

(a) naive:    one sentence per row, padded batches, full CausalLM forward (LM-head logits
              for every position) with a hook counting ``act(gate(x)) > 0`` on unpadded tokens;
(b) lape-hub: :func:`lape_hub.activation_counts.count_activations` on packed rows (trunk only);
(c) bare:     the trunk's forward on the same packed rows, no hooks, nothing counted.

The work is split into rounds (one packed batch of (b)/(c) and the same sentences for (a)),
run interleaved with the order rotated each round, so load changes on a shared machine hit
the three alike. Prints tokens/s of each and the ratios (b)/(a) (target >= 3) and (b)/(c)
(target >= 0.95).

Run (Gemma-3-270M offline, 2 CPU threads, ~3-5 minutes)::

    python benchmarks/bench_counting.py --model gemma-3-270m --threads 2 --max-tokens 16384 --batch-size 4
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from lape_hub import activation_counts as ac
from lape_hub.activation_counts import count_activations
from lape_hub.corpus import PackedCorpus, read_documents, tokenize_and_pack
from lape_hub.ffn import find_ffn_layers, hook_post_activations, trunk
from lape_hub.models import load_model

SIB = Path(__file__).resolve().parents[2] / "shared" / "data" / "sib200"


def sample_documents(corpus: Path, langs: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Sentences of several languages, interleaved, until about ``max_tokens`` tokens."""
    per_lang = [read_documents(corpus, lang, "train") for lang in langs]
    docs, n = [], 0
    for group in zip(*per_lang):
        for d in group:
            docs.append(d)
            n += len(tokenizer(d, add_special_tokens=False).input_ids) + 1
            if n >= max_tokens:
                return docs
    return docs


def naive_count(model, tokenizer, docs: list[str], batch_size: int, over: torch.Tensor) -> int:
    """(a): padded sentence batches through the full CausalLM, hooked. Returns real tokens."""
    layers = find_ffn_layers(model)
    mask_now: list[torch.Tensor] = []

    def hook(i: int, act: torch.Tensor) -> None:
        over[i] += ((act > 0) & mask_now[0][..., None]).sum(dim=(0, 1))

    n_tok = 0
    with torch.inference_mode(), hook_post_activations(layers, hook):
        for i in range(0, len(docs), batch_size):
            enc = tokenizer(docs[i : i + batch_size], padding=True, return_tensors="pt")  # BOS added
            mask_now[:] = [enc.attention_mask.bool()]
            model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, use_cache=False)
            n_tok += int(enc.attention_mask.sum())
    return n_tok


def bare_trunk(model, packed: PackedCorpus) -> None:
    """(c): the trunk on packed rows (one batch), no hooks."""
    mask = packed.attention_mask
    with torch.inference_mode():
        trunk(model)(input_ids=packed.input_ids, attention_mask=None if bool(mask.all()) else mask,
                     use_cache=False)


def rounds(docs: list[str], packed: PackedCorpus, tokenizer, batch_size: int):
    """Split the work into rounds: packed batch k and the sentences whose tokens it holds."""
    starts, n = [], 0
    for d in docs:
        starts.append(n)
        n += len(tokenizer(d, add_special_tokens=False).input_ids) + 1  # + BOS
    per_batch = batch_size * packed.seq_len
    for k, lo in enumerate(range(0, packed.n_sequences, batch_size)):
        rows = slice(lo, lo + batch_size)
        part = PackedCorpus(packed.input_ids[rows], packed.attention_mask[rows],
                            int(packed.attention_mask[rows].sum()), 0)
        sents = [d for d, s in zip(docs, starts) if k * per_batch <= s < (k + 1) * per_batch]
        yield part, sents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--corpus", type=Path, default=SIB)
    ap.add_argument("--langs", default="npi_Deva,mlt_Latn,cym_Latn,kat_Geor")
    ap.add_argument("--max-tokens", type=int, default=16384)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4, help="rows per batch, packed and naive")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    model, tok = load_model(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t:.1f} s; torch {torch.__version__}, "
          f"{args.threads} threads, {platform.machine()}, load average {os.getloadavg()[0]:.1f}")
    docs = sample_documents(args.corpus, args.langs.split(","), tok, args.max_tokens)
    packed = tokenize_and_pack(docs, tok, args.seq_len)
    print(f"sample: {len(docs)} sentences, {packed.n_tokens} tokens, {packed.n_sequences} packed rows of {args.seq_len}")

    # warm-up (allocator, oneDNN kernels)
    warm = tokenize_and_pack(docs[:40], tok, args.seq_len, min_tokens=1)
    bare_trunk(model, warm)
    count_activations(model, warm, progress=False)
    layers = find_ffn_layers(model)
    over_a = torch.zeros(len(layers), layers[0].d_ffn, dtype=torch.int64)
    naive_count(model, tok, docs[: args.batch_size], args.batch_size, over_a.clone())

    # Time spent inside the counting hooks: the part of (b) that (c) does not do.
    hook_secs = [0.0]
    real_hook = ac.hook_post_activations

    def timed_hooks(layers, fn):
        def timed(i, act):
            t0 = time.perf_counter()
            fn(i, act)
            hook_secs[0] += time.perf_counter() - t0

        return real_hook(layers, timed)

    ac.hook_post_activations = timed_hooks

    # Interleaved rounds (order rotated each round) so that load drifts on a shared machine
    # hit the three methods alike.
    secs = {"a": 0.0, "b": 0.0, "c": 0.0}
    a_tokens = b_tokens = 0
    b_over = torch.zeros_like(over_a)
    orders = ["abc", "bca", "cab", "acb", "bac", "cba"]
    for k, (part, sents) in enumerate(rounds(docs, packed, tok, args.batch_size)):
        for m in orders[k % len(orders)]:
            t = time.perf_counter()
            if m == "a":
                a_tokens += naive_count(model, tok, sents, args.batch_size, over_a)
            elif m == "b":
                c = count_activations(model, part, batch_size=args.batch_size, progress=False)
                b_over += torch.from_numpy(c.over_zero)
                b_tokens += c.n_tokens
            else:
                bare_trunk(model, part)
            secs[m] += time.perf_counter() - t
        print(f"  round {k + 1}: a {secs['a']:.1f} s, b {secs['b']:.1f} s, c {secs['c']:.1f} s (cumulative)",
              flush=True)
    assert a_tokens == b_tokens == packed.n_tokens, (a_tokens, b_tokens, packed.n_tokens)

    a, b, c = (packed.n_tokens / secs[m] for m in "abc")
    print()
    print("| method | tokens | seconds | tokens/s |")
    print("|---|---:|---:|---:|")
    print(f"| (a) naive: padded sentences, full CausalLM + hook | {a_tokens} | {secs['a']:.1f} | {a:,.0f} |")
    print(f"| (b) lape-hub count_activations, packed, trunk only | {b_tokens} | {secs['b']:.1f} | {b:,.0f} |")
    print(f"| (c) bare trunk forward, packed, no hooks | {packed.n_tokens} | {secs['c']:.1f} | {c:,.0f} |")
    print()
    print(f"(b)/(a) = {b / a:.2f}  (target >= 3)")
    print(f"(b)/(c) = {b / c:.3f}  (target >= 0.95)")
    print(f"time inside the counting hooks: {hook_secs[0]:.1f} s = {100 * hook_secs[0] / secs['b']:.1f} % of (b)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
