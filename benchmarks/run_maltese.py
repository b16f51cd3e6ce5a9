"""Reproduce the Maltese fine-tuning comparison of docs/finetune.md on Gemma-3-270M.

For each method (lape-sparse with the paper-12 Maltese neuron set, a random set of the same
size, LoRA with matched parameters, full fine-tuning) this fine-tunes on SIB-200 mlt_Latn
train (one epoch over the token budget), validates on mlt_Latn dev, keeps the best
checkpoint, reloads the saved adapter onto a fresh model and measures held-out perplexity on
Maltese (mlt_Latn test) and English (eng_Latn dev), before and after.

Runs resume: rerunning the same command continues interrupted runs (checkpoints in --out).

Usage::

    python benchmarks/run_maltese.py --tokens 40960 --eval-every 10
    python benchmarks/run_maltese.py --methods lape-sparse,lora --no-record

Writes ``<docs>/finetune_maltese.json`` and ``<docs>/finetune_maltese_val.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL, LANG, REFSET = "gemma-3-270m", "mlt_Latn", "paper-12"


def packed(tok, corpus: str, lang: str, split: str, seq_len: int):
    from lape_hub.corpus import read_documents, tokenize_and_pack

    return tokenize_and_pack(read_documents(corpus, lang, split), tok, seq_len, min_tokens=2, lang=lang)


def held_out(model, sets: dict, batch_size: int) -> dict[str, float]:
    """Perplexity on each held-out set."""
    from lape_hub.finetune import evaluate

    return {name: math.exp(evaluate(model, data, batch_size)) for name, data in sets.items()}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        steps, losses = zip(*r["val_losses"])
        tokens = [s * r["tokens"] / max(r["steps"], 1) for s in steps]
        ax.plot([t / 1000 for t in tokens], losses, marker="o", ms=3,
                label=f"{r['method']} ({r['trainable_params'] / 1e6:.2f}M trained)")
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("validation loss, mlt_Latn dev (nats/token)")
    ax.set_title("Gemma-3-270M, Maltese (SIB-200), one epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="lape-sparse,random,lora,full")
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "sib200"))
    ap.add_argument("--tokens", type=int, default=None, help="token budget (default: the whole train split)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "maltese"))
    ap.add_argument("--docs", default=str(ROOT / "docs"))
    ap.add_argument("--catalog", default=None, help="catalog for the adapters rows (default: the embedded one)")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; on a shared 2-core machine 1 is ~3x faster than 2 (OpenMP oversubscription)")
    args = ap.parse_args()

    import torch

    from lape_hub.catalog import Catalog
    from lape_hub.finetune import FinetuneConfig, finetune
    from lape_hub.models import load_model
    from lape_hub.sparse_adapter import apply_adapter

    torch.set_num_threads(args.threads)
    ns = Catalog(args.catalog).neuron_set(MODEL, LANG, refset=REFSET)
    print(ns.summary())
    base, tok = load_model(MODEL)
    sets = {"mlt_Latn test": packed(tok, args.corpus, "mlt_Latn", "test", args.seq_len),
            "eng_Latn dev": packed(tok, args.corpus, "eng_Latn", "dev", args.seq_len)}
    t = time.time()
    before = held_out(base, sets, 2)
    print(f"base model perplexity: {before} ({time.time() - t:.0f} s)")
    del base

    results = []
    for method in [m for m in args.methods.split(",") if m]:
        cfg = FinetuneConfig(MODEL, LANG, corpus=args.corpus, method=method, refset=REFSET,
                             train_tokens=args.tokens, seq_len=args.seq_len, eval_every=args.eval_every,
                             checkpoint_every=args.eval_every if method != "full" else 10**9,
                             seed=args.seed)
        model, _ = load_model(MODEL)
        res = finetune(cfg, Path(args.out) / method, model=model, tokenizer=tok, neuron_set=ns,
                       catalog=args.catalog, record=not args.no_record)
        del model
        fresh, _ = load_model(MODEL)
        tuned = apply_adapter(fresh, res.adapter_dir, model_name=MODEL, neuron_set=ns if method == "lape-sparse" else None)
        after = held_out(tuned, sets, 2)
        row = {"method": method, "signature": res.config.signature, "trainable_params": res.trainable_params,
               "share": res.config.share, "tokens": res.tokens, "steps": res.steps, "best_step": res.best_step,
               "best_val_loss": res.best_val_loss, "base_val_loss": res.val_losses[0][1],
               "seconds": res.seconds, "val_losses": res.val_losses, "ppl_before": before, "ppl_after": after,
               "adapter_dir": str(res.adapter_dir), "lr": res.config.hyperparameters["lr"],
               "lora_rank": res.config.hyperparameters.get("lora_rank")}
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "val_losses"}, indent=1))
        del fresh, tuned

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "finetune_maltese.json").write_text(json.dumps(
        {"model": MODEL, "lang": LANG, "refset": REFSET, "neuron_set_hash": ns.content_hash,
         "n_neurons": ns.n_neurons, "seq_len": args.seq_len, "threads": args.threads,
         "token_budget": args.tokens, "eval_every": args.eval_every, "results": results}, indent=1) + "\n")
    plot(results, docs / "finetune_maltese_val.png")
    print("\n| method | trained params | tokens | steps | val loss base -> best (step) | ppl mlt test before -> after | ppl eng dev before -> after | time |")
    print("|---|---:|---:|---:|---|---|---|---:|")
    for r in results:
        b, a = r["ppl_before"], r["ppl_after"]
        print(f"| {r['method']} | {r['trainable_params'] / 1e6:.2f}M ({100 * r['share']:.2f} %) | {r['tokens']:,} | "
              f"{r['steps']} | {r['base_val_loss']:.3f} -> {r['best_val_loss']:.3f} ({r['best_step']}) | "
              f"{b['mlt_Latn test']:.1f} -> {a['mlt_Latn test']:.1f} | {b['eng_Latn dev']:.1f} -> {a['eng_Latn dev']:.1f} | "
              f"{r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
