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
    python scripts/paper_claims.py              # the grid's state
    python scripts/paper_claims.py --summary    # perplexity changes per method

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
#: the methods that get the extra seeds, in the order they ran: the paper's comparison (its
#: neurons vs a random set of the same size vs LoRA of the same size) first, then ffn and full
#: (8-20 min a run here), added in a later session.
SEED_METHODS = ["lape-sparse", "random", "lora", "ffn", "full"]
#: the budget every method gets: 16 optimizer steps of 2 x 256 tokens, validation every 4.
BUDGET = dict(train_tokens=8192, val_tokens=2048, seq_len=256, batch_size=2, eval_every=4,
              checkpoint_every=4, dtype="float32", device="cpu")
TASKS = ["translation", "topic", "perplexity"]
EVAL = dict(split="test", limit=24, control_langs=("eng_Latn",))
CLAIMS = ROOT / "runs" / "claims"


def grid() -> list[tuple[str, str, int]]:
    """(lang, method or 'base', seed), most informative first: seed 0 of every language,
    then Maltese's extra seeds, one method at a time (lape-sparse first, full last)."""
    items = []
    for lang in LANGS:
        items.append((lang, "base", 0))
        items += [(lang, m, 0) for m in METHODS]
    for m in SEED_METHODS:   # extra seeds method by method
        items += [(lang, m, s) for lang in LANGS for s in SEEDS[lang][1:]]
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
    budget = dict(BUDGET)
    if method == "full":   # a checkpoint is 3 GB of weights and AdamW state: only the last one
        budget["checkpoint_every"] = BUDGET["train_tokens"] // (BUDGET["seq_len"] * BUDGET["batch_size"])
    cfg = FinetuneConfig(MODEL, lang, corpus=CORPUS, method=method, seed=seed, **budget)
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
        if phase == "eval" and not (CLAIMS / f"{_key(item, 'train')}.done").exists():
            continue          # not trained yet: a later eval worker takes it
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
        # start afresh for the next item: a fresh process (memory) running the script as it is now
        os.execv(sys.executable, [sys.executable, __file__, "--worker", phase])


def status() -> None:
    for phase in ("train", "eval"):
        for item in grid():
            key = _key(item, phase)
            done, claim = CLAIMS / f"{key}.done", CLAIMS / f"{key}.claim"
            state = ("done " + done.read_text().strip() if done.exists() else
                     "running" if claim.exists() else "todo")
            print(f"{key:34s} {state}")


def summary() -> None:
    """Perplexity change against the base model (%), target language and English, per
    method (mean ± sd over seeds): the table docs/claims.md quotes."""
    import statistics as st

    from lape_hub.evaluation.results import read_evals

    print("| language | method | seeds | ppl of the language: change | ppl of English: change |")
    print("|---|---|---:|---:|---:|")
    for lang in LANGS:
        rows = [r for r in read_evals(ROOT / "catalog", model=MODEL, lang=lang, task="perplexity")
                if r["split"] == EVAL["split"]]
        base = {r["direction"]: r["value"] for r in rows if r["run_id"] == "base"}
        runs: dict[str, dict[str, dict[str, float]]] = {}
        for r in rows:
            if r["run_id"] != "base":
                runs.setdefault(r["method"], {}).setdefault(r["run_id"], {})[r["direction"]] = r["value"]

        def cell(x: list[float]) -> str:
            return f"{st.mean(x):+.1f} %" + (f" ± {st.stdev(x):.1f}" if len(x) > 1 else "")

        for m in METHODS:
            got = list(runs.get(m, {}).values())
            if got:
                t = [100 * (v[lang] / base[lang] - 1) for v in got]
                e = [100 * (v["eng_Latn"] / base["eng_Latn"] - 1) for v in got]
                print(f"| {lang} | {m} | {len(got)} | {cell(t)} | {cell(e)} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", action="store_true", help="print the perplexity-change table")
    ap.add_argument("--worker", choices=["train", "eval"],
                    help="take and run this phase's grid items until none is left")
    args = ap.parse_args()
    if args.worker == "eval":   # wait for trainings still running, then evaluate them
        while True:
            worker("eval")
            left = [i for i in grid() if not (CLAIMS / f"{_key(i, 'eval')}.done").exists()]
            if not left or not any((CLAIMS / f"{_key(i, 'train')}.claim").exists()
                                   or not (CLAIMS / f"{_key(i, 'train')}.done").exists() for i in left):
                break
            time.sleep(20)
    elif args.worker:
        worker(args.worker)
    elif args.summary:
        summary()
    else:
        status()
    sys.exit(0)
