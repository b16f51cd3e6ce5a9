"""Benchmark activation counting, side by side on one model and one token sample, in
float32 and bfloat16.

(a) naive:    one sentence per row, padded batches, full CausalLM forward (LM-head logits
              for every position) with a hook counting ``act(gate(x)) > 0`` on unpadded tokens;
(b) lape-hub: :func:`lape_hub.activation_counts.count_activations` on packed rows (trunk only);
(c) bare:     the trunk's forward on the same packed rows, no hooks, nothing counted.

Each of the three runs on the model in float32 and in bfloat16 (six methods). Every
language of ``--langs`` is packed on its own; the work is split into rounds (one packed
batch of (b)/(c) and the same sentences for (a)), run interleaved with the order rotated
each round, so load changes on a shared machine hit all six alike. Prints tokens/s, the
ratios (b)/(a) (target >= 3), (b)/(c) (target >= 0.95) and bfloat16/float32, and a fidelity
line: per language, the Jaccard similarity of the LAPE sets selected (over ``--langs``) from
the bfloat16 counts and from the float32 counts of the same tokens.

Run (Gemma-3-270M offline, ~5-10 minutes on an idle 2-core machine)::

    python benchmarks/bench_counting.py --model gemma-3-270m --threads 2 --max-tokens 16384 --batch-size 4
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lape_hub import activation_counts as ac
from lape_hub.activation_counts import count_activations
from lape_hub.corpus import PackedCorpus, read_documents, tokenize_and_pack
from lape_hub.ffn import find_ffn_layers, hook_post_activations, trunk
from lape_hub.lape import select_lape
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


def jaccard(a: list, b: list) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / max(len(sa | sb), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--corpus", type=Path, default=SIB)
    ap.add_argument("--langs", default="npi_Deva,mlt_Latn,cym_Latn,kat_Geor")
    ap.add_argument("--max-tokens", type=int, default=16384, help="tokens in all, split over --langs")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4, help="rows per batch, packed and naive")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    models = {"f32": load_model(args.model, dtype="float32")[0]}
    models["bf16"], tok = load_model(args.model, dtype="bfloat16")
    print(f"loaded {args.model} (float32 and bfloat16) in {time.perf_counter() - t:.1f} s; torch "
          f"{torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    langs = args.langs.split(",")
    per_lang = args.max_tokens // len(langs)
    work = []  # (lang, packed part, sentences)
    n_docs = n_tokens = 0
    for lang in langs:
        docs = sample_documents(args.corpus, [lang], tok, per_lang)
        packed = tokenize_and_pack(docs, tok, args.seq_len, min_tokens=1)
        n_docs, n_tokens = n_docs + len(docs), n_tokens + packed.n_tokens
        work += [(lang, part, sents) for part, sents in rounds(docs, packed, tok, args.batch_size)]
    # interleave the languages' rounds so that every stretch of the run sees all of them
    work = [w for k in range(max(len([x for x in work if x[0] == lang]) for lang in langs))
            for lang in langs for w in [x for x in work if x[0] == lang][k:k + 1]]
    print(f"sample: {n_docs} sentences, {n_tokens} tokens of {len(langs)} languages "
          f"({', '.join(langs)}), {len(work)} rounds of up to {args.batch_size} packed rows of {args.seq_len}")

    # warm-up (allocator, oneDNN kernels)
    warm = work[0][1]
    for m in models.values():
        bare_trunk(m, warm)
        count_activations(m, warm, progress=False)
    layers = find_ffn_layers(models["f32"])
    shape = (len(layers), layers[0].d_ffn)
    for m in models.values():
        naive_count(m, tok, work[0][2][: args.batch_size], args.batch_size,
                    torch.zeros(shape, dtype=torch.int64))

    # Time spent inside the counting hooks: the part of (b) that (c) does not do.
    hook_secs = {"f32": 0.0, "bf16": 0.0}
    current = ["f32"]
    real_hook = ac.hook_post_activations

    def timed_hooks(layers, fn):
        def timed(i, act):
            t0 = time.perf_counter()
            fn(i, act)
            hook_secs[current[0]] += time.perf_counter() - t0

        return real_hook(layers, timed)

    ac.hook_post_activations = timed_hooks

    # Interleaved rounds (order rotated each round) so that load drifts on a shared machine
    # hit the six methods alike.
    methods = [f"{x}{d}" for d in ("f32", "bf16") for x in "abc"]
    secs = dict.fromkeys(methods, 0.0)
    toks = dict.fromkeys(methods, 0)
    over = {(d, lang): torch.zeros(shape, dtype=torch.int64) for d in models for lang in langs}
    naive_over = {d: torch.zeros(shape, dtype=torch.int64) for d in models}
    b_tokens = dict.fromkeys(langs, 0)
    for k, (lang, part, sents) in enumerate(work):
        order = methods[k % len(methods):] + methods[:k % len(methods)]
        for m in (order if k % 2 == 0 else order[::-1]):
            kind, d = m[0], m[1:]
            model = models[d]
            t = time.perf_counter()
            if kind == "a":
                toks[m] += naive_count(model, tok, sents, args.batch_size, naive_over[d])
            elif kind == "b":
                current[0] = d
                c = count_activations(model, part, batch_size=args.batch_size, progress=False)
                over[d, lang] += torch.from_numpy(c.over_zero)
                toks[m] += c.n_tokens
                if d == "f32":
                    b_tokens[lang] += c.n_tokens
            else:
                bare_trunk(model, part)
                toks[m] += part.n_tokens
            secs[m] += time.perf_counter() - t
        print(f"  round {k + 1}/{len(work)}: " + ", ".join(f"{m} {secs[m]:.0f} s" for m in methods),
              flush=True)
    assert len(set(toks.values())) == 1, toks

    rate = {m: toks[m] / secs[m] for m in methods}
    names = {"a": "(a) naive: padded sentences, full CausalLM + hook",
             "b": "(b) lape-hub count_activations, packed, trunk only",
             "c": "(c) bare trunk forward, packed, no hooks"}
    print()
    print("| method | dtype | tokens | seconds | tokens/s |")
    print("|---|---|---:|---:|---:|")
    for d, label in (("f32", "float32"), ("bf16", "bfloat16")):
        for x in "abc":
            m = f"{x}{d}"
            print(f"| {names[x]} | {label} | {toks[m]} | {secs[m]:.1f} | {rate[m]:,.0f} |")
    print()
    for d, label in (("f32", "float32"), ("bf16", "bfloat16")):
        print(f"{label}: (b)/(a) = {rate['b' + d] / rate['a' + d]:.2f} (target >= 3), "
              f"(b)/(c) = {rate['b' + d] / rate['c' + d]:.3f} (target >= 0.95), time inside the "
              f"counting hooks {hook_secs[d]:.1f} s = {100 * hook_secs[d] / secs['b' + d]:.1f} % of (b)")
    for x in "abc":
        print(f"bfloat16/float32 speed-up, ({x}): {rate[x + 'bf16'] / rate[x + 'f32']:.2f}")

    # fidelity: LAPE over --langs from the bfloat16 counts against the float32 counts
    n = np.array([b_tokens[lang] for lang in langs])
    sel = {d: select_lape(np.stack([over[d, lang].numpy() for lang in langs], axis=-1), n)
           for d in models}
    js = [jaccard(sel["bf16"].neurons(k), sel["f32"].neurons(k)) for k in range(len(langs))]
    sizes = [(len(sel["f32"].neurons(k)), len(sel["bf16"].neurons(k))) for k in range(len(langs))]
    dp = np.abs(sel["bf16"].probs - sel["f32"].probs).max()
    print("fidelity (LAPE over the sample's languages, bfloat16 vs float32 counts of the same "
          "tokens): Jaccard " + ", ".join(f"{lang} {j:.3f} ({a} vs {b} neurons)"
                                          for lang, j, (a, b) in zip(langs, js, sizes))
          + f"; mean {np.mean(js):.3f}; max |Δp| {dp:.4f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
