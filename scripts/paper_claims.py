"""Test the paper's claims on Gemma-3-270M: every method, the same budget, the same evaluation.

The grid (issue 11's deliverable): for each language, the base model and the adapters of
lape-sparse, random (same size), LoRA (matched parameters), FFN-only and full fine-tuning,
trained on the same tokens with the same seed, then evaluated on the target language's tasks
plus the English forgetting check. Rows go to the catalog's ``adapters`` and ``evals`` tables.

Run it with as many workers as the machine has cores; each worker takes the next unclaimed
item of the grid (a claim file under ``runs/claims/``), so workers share the work and a
rerun resumes: finished trainings are not repeated (their ``run.json`` exists), finished
evaluations are skipped (their rows exist), an interrupted training resumes from its
checkpoint.

    python scripts/paper_claims.py --worker train &   # one per core: every training first
    python scripts/paper_claims.py --worker train &
    python scripts/paper_claims.py --worker eval &    # then every evaluation
    python scripts/paper_claims.py --worker eval &
    python scripts/paper_claims.py --status

Budget and settings: the constants below (stated in docs/evaluation.md with the results).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "gemma-3-270m"
CORPUS = str(ROOT.parent / "shared" / "data" / "sib200")
LANGS = ["mlt_Latn", "afr_Latn", "cym_Latn"]
METHODS = ["lape-sparse", "random", "lora", "ffn", "full"]
SEEDS = {"mlt_Latn": [0, 1, 2], "afr_Latn": [0], "cym_Latn": [0]}
#: the budget every method gets: 16 optimizer steps of 2 x 256 tokens, validation every 4.
BUDGET = dict(train_tokens=8192, val_tokens=2048, seq_len=256, batch_size=2, eval_every=4,
              checkpoint_every=4, dtype="float32", device="cpu")
TASKS = ["translation", "topic", "perplexity"]
EVAL = dict(split="test", limit=24, control_langs=("eng_Latn",))
CLAIMS = ROOT / "runs" / "claims"


def grid() -> list[tuple[str, str, int]]:
    """(lang, method or 'base', seed), most informative first: seed 0 of every language,
    then Maltese's extra seeds."""
    items = []
    for lang in LANGS:
        items.append((lang, "base", 0))
        items += [(lang, m, 0) for m in METHODS]
    for lang in LANGS:
        items += [(lang, m, s) for s in SEEDS[lang][1:] for m in METHODS]
    return items


def _key(item: tuple[str, str, int], phase: str) -> str:
    lang, method, seed = item
    return f"{phase}-{lang}-{method}-s{seed}"


def _claim(key: str) -> bool:
    """Claim ``key`` for this process (False if done or claimed by a live process)."""
    CLAIMS.mkdir(parents=True, exist_ok=True)
    if (CLAIMS / f"{key}.done").exists():
        return False
    claim = CLAIMS / f"{key}.claim"
    try:
        os.kill(int(claim.read_text()), 0)
        return False          # a live worker has it
    except (OSError, ValueError):
        claim.unlink(missing_ok=True)   # none, or its worker died: take it over
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def train_item(item: tuple[str, str, int]) -> dict:
    from lape_hub.finetune import FinetuneConfig, finetune

    lang, method, seed = item
    if method == "base":
        return {}
    cfg = FinetuneConfig(MODEL, lang, corpus=CORPUS, method=method, seed=seed, **BUDGET)
    res = finetune(cfg, catalog=ROOT / "catalog", progress=False)
    print(f"  [{os.getpid()}] {lang} {method} s{seed}: best val {res.best_val_loss:.4f} at step "
          f"{res.best_step}/{res.steps} ({res.seconds:.0f} s)", flush=True)
    if method == "full":   # 3 GB of optimizer state: the adapter folder is what is kept
        for p in (res.out_dir / "checkpoint").glob("*.pt"):
            p.unlink()
    return {"adapter": str(res.adapter_dir), "run_id": res.run_id, "train_seconds": round(res.seconds, 1)}


def eval_item(item: tuple[str, str, int]) -> dict:
    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.evaluator import evaluate_suite, load_system

    lang, method, _ = item
    adapter = None
    if method != "base":
        trained = CLAIMS / f"{_key(item, 'train')}.done"
        if not trained.exists():
            raise SystemExit(f"{_key(item, 'train')} has not run yet")
        adapter = json.loads(trained.read_text())["adapter"]
    catalog = Catalog(ROOT / "catalog")
    system = load_system(MODEL, adapter=adapter, dtype="float32", catalog=catalog)
    evaluate_suite(system, lang, TASKS, resume=True, catalog=catalog,
                   log=lambda line: print(f"  [{os.getpid()}] {line}", flush=True), **EVAL)
    return {"run_id": system.run_id}


def worker(phase: str) -> None:
    import torch

    torch.set_num_threads(1)
    run = {"train": train_item, "eval": eval_item}[phase]
    for item in grid():
        key = _key(item, phase)
        if not _claim(key):
            continue
        start = time.time()
        print(f"[{os.getpid()}] {time.strftime('%H:%M:%S')} start {key}", flush=True)
        info = run(item)
        info["seconds"] = round(time.time() - start, 1)
        (CLAIMS / f"{key}.done").write_text(json.dumps(info) + "\n")
        (CLAIMS / f"{key}.claim").unlink(missing_ok=True)
        print(f"[{os.getpid()}] {time.strftime('%H:%M:%S')} done {key} ({info['seconds']:.0f} s)",
              flush=True)


def status() -> None:
    for phase in ("train", "eval"):
        for item in grid():
            key = _key(item, phase)
            done, claim = CLAIMS / f"{key}.done", CLAIMS / f"{key}.claim"
            state = ("done " + done.read_text().strip() if done.exists() else
                     "running" if claim.exists() else "todo")
            print(f"{key:34s} {state}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=["train", "eval"],
                    help="take and run this phase's grid items until none is left")
    args = ap.parse_args()
    worker(args.worker) if args.worker else status()
    sys.exit(0)
