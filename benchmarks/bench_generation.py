"""Batched KV-cache generation (lape-hub's evaluation) vs one ``generate`` call per sentence.

Both runs use :func:`lape_hub.evaluation.generation.generate` with the paper's settings
(greedy, repetition penalty 1.1, stop strings) on the same translation prompts: once with
``--batch-size`` prompts per call (left padding, KV cache), once with one prompt per call.
Prints each run's wall time and new tokens per second, the speed ratio, and whether the
outputs are identical.

Usage::

    python benchmarks/bench_generation.py                          # tiny random-init model
    python benchmarks/bench_generation.py --model gemma-3-270m --n 16 --dtype float32
    python benchmarks/bench_generation.py --model gemma-3-270m --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prompts(n: int, data: Path) -> list[str]:
    from lape_hub.evaluation.tasks import parallel_examples
    from lape_hub.evaluation.translation import prompt

    if not (data / "fra_Latn").is_dir():
        data = ROOT / "tests" / "fixtures" / "eval" / "sib200"
    pairs = parallel_examples(data, "fra_Latn", "eng_Latn", "test")
    pairs = (pairs * (n // len(pairs) + 1))[:n]
    return [prompt("fra_Latn", "eng_Latn", a.text) for a, _ in pairs]


def _tiny():
    sys.path.insert(0, str(ROOT / "tests"))
    from _tiny_models import tiny_model, tiny_tokenizer

    return tiny_model("llama"), tiny_tokenizer()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny (random-init, default) or a model lape-hub loads")
    ap.add_argument("--n", type=int, default=16, help="prompts")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 where the device supports it")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sib200")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    import torch

    from lape_hub.evaluation.generation import GenerationSettings, generate, preferred_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = args.dtype or preferred_dtype(args.device)
    if args.model == "tiny":
        model, tok = _tiny()
        model.to(device=args.device, dtype=getattr(torch, dtype))
    else:
        from lape_hub.models import load_model

        model, tok = load_model(args.model, device=args.device, dtype=dtype)
    prompts = _prompts(args.n, args.data)
    generate(model, tok, prompts[:2], GenerationSettings(max_new_tokens=4, batch_size=2))  # warm-up
    out = {"model": args.model, "device": args.device, "dtype": dtype, "n": len(prompts),
           "threads": torch.get_num_threads(), "max_new_tokens": args.max_new_tokens}
    texts = {}
    for label, bs in (("batched", args.batch_size), ("one-per-call", 1)):
        t = time.perf_counter()
        res = generate(model, tok, prompts, GenerationSettings(max_new_tokens=args.max_new_tokens,
                                                               batch_size=bs))
        sec = time.perf_counter() - t
        out[label] = {"batch_size": bs, "seconds": round(sec, 2), "new_tokens": res.new_tokens,
                      "tokens_per_s": round(res.new_tokens / sec, 1)}
        texts[label] = res.texts
        print(f"{label:13s} batch {bs:3d}: {sec:7.2f} s, {res.new_tokens:5d} new tokens, "
              f"{res.new_tokens / sec:8.1f} tok/s", flush=True)
    out["speedup"] = round(out["one-per-call"]["seconds"] / out["batched"]["seconds"], 2)
    out["same_outputs"] = texts["batched"] == texts["one-per-call"]
    out["same_outputs_share"] = round(sum(a == b for a, b in zip(texts["batched"], texts["one-per-call"]))
                                      / len(prompts), 3)
    print(f"speedup (one-per-call time / batched time): {out['speedup']}x; identical outputs: "
          f"{out['same_outputs_share']:.0%} of prompts")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
