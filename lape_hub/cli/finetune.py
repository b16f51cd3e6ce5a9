"""``lape-hub finetune`` and ``lape-hub merge``: thin wrappers over lape_hub.finetune and
lape_hub.sparse_adapter (parse, call, print).

Example::

    $ lape-hub finetune --model gemma-3-270m --lang mlt_Latn --corpus ../shared/data/sib200 \\
          --tokens 40000 --method lape-sparse
    $ lape-hub merge runs/finetune/gemma-3-270m/mlt_Latn/lape-sparse-<id>/adapter -o merged/mlt
"""
from __future__ import annotations

import click

from lape_hub.cli._common import (NON_NEGATIVE, NON_NEGATIVE_FLOAT, POSITIVE, POSITIVE_FLOAT,
                                  catalog_option, catalog_root, langs_callback, print_table,
                                  split_langs, task_list)
from lape_hub.errors import require

_METHODS = ["lape-sparse", "random", "lora", "ia3", "ffn", "full"]


@click.command()
@click.option("--model", required=True, help="Registry alias, Hugging Face repo id or local folder.")
@click.option("--lang", required=True,
              help="Language to fine-tune: FLORES-200 code, ISO 639-1/3, BCP-47 tag or English name.")
@click.option("--corpus", required=True,
              help="Per-language folder (SIB-200 layout: <corpus>/<lang>/<split>.tsv), a file, or hf:<dataset>.")
@click.option("--method", type=click.Choice(_METHODS), default="lape-sparse", show_default=True,
              help="lape-sparse: the language's neurons; random/lora/ia3/ffn/full: the paper's baselines.")
@click.option("--refset", default="paper-12", show_default=True, help="Reference set of the neuron set.")
@click.option("--components", default="gate,up,down", show_default=True,
              help="Sparse methods: which projections of each neuron train.")
@click.option("--tokens", "train_tokens", type=POSITIVE, default=None,
              help="Token budget: one epoch over this many training tokens (default: the whole split).")
@click.option("--val-tokens", type=POSITIVE, default=None,
              help="Cap on validation tokens (default: the whole split).")
@click.option("--train-split", default="train", show_default=True, help="Split trained on.")
@click.option("--val-split", default="dev", show_default=True,
              help="Split validated on (the best checkpoint by its loss is kept).")
@click.option("--seq-len", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per training sequence (>= 2).")
@click.option("--batch-size", type=POSITIVE, default=2, show_default=True,
              help="Sequences per optimizer step.")
@click.option("--lr", type=POSITIVE_FLOAT, default=None,
              help="Learning rate, > 0 (default: 1e-4; 1e-5 for ffn and full).")
@click.option("--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.01, show_default=True,
              help="AdamW weight decay (>= 0).")
@click.option("--grad-clip", type=POSITIVE_FLOAT, default=1.0, show_default=True,
              help="Clip the gradient norm to this value (> 0).")
@click.option("--eval-every", type=POSITIVE, default=50, show_default=True,
              help="Validate every N steps.")
@click.option("--checkpoint-every", type=POSITIVE, default=None,
              help="Checkpoint every N steps (default: --eval-every).")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True,
              help="Random seed (data order, random neuron baseline, initialization).")
@click.option("--lora-rank", type=POSITIVE, default=None,
              help="LoRA rank (default: matched to the neuron set's size).")
@click.option("--lora-alpha", type=POSITIVE_FLOAT, default=32.0, show_default=True,
              help="LoRA scaling alpha (> 0).")
@click.option("--lora-match", type=click.Choice(["params", "paper"]), default="params", show_default=True,
              help="Rank matching: exact parameter count, or the paper's count (one projection per layer, ~3x).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
              help="Compute dtype: bfloat16 = bf16 autocast, float32 weights, deltas and optimizer state; "
                   "auto = bfloat16 on CUDA and on CPUs with bf16 instructions (avx512_bf16/amx), else float32.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: the fastest count on this machine, measured once and cached).")
@click.option("-o", "--out", "out_dir", default=None,
              help="Run folder (default: runs/finetune/MODEL/LANG/METHOD-RUNID; rerunning resumes it); "
                   "created with missing parents; never inside the catalog or the cache.")
@click.option("--fresh", is_flag=True, help="Discard a checkpoint in the run folder instead of resuming.")
@click.option("--no-record", is_flag=True, help="Do not add the run to the catalog's adapters table.")
@click.option("--eval-tasks", multiple=True, default=None,
              help="After training, evaluate the best checkpoint on these tasks (comma-separated: "
                   "translation, topic, belebele, perplexity, general); rows go to the evals table "
                   "under the run's id. Already evaluated tasks are skipped on a rerun.")
@click.option("--eval-limit", type=POSITIVE, default=None, help="First N examples of each eval task.")
@click.option("--eval-split", type=click.Choice(["dev", "test"]), default="test", show_default=True,
              help="Split the eval tasks run on.")
@click.option("--eval-control", multiple=True, callback=langs_callback, default=("eng_Latn",),
              show_default=True,
              help="Control languages for the forgetting check (topic/belebele/general run on them too).")
@click.option("--eval-data", type=click.Path(file_okay=False), default=None,
              help="FLORES/SIB-200 folder for the eval tasks (default: as lape-hub eval).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@catalog_option
def finetune(model, lang, corpus, method, refset, components, train_tokens, val_tokens, train_split,
             val_split, seq_len, batch_size, lr, weight_decay, grad_clip, eval_every, checkpoint_every,
             seed, lora_rank, lora_alpha, lora_match, dtype, device, threads, out_dir, fresh, no_record,
             eval_tasks, eval_limit, eval_split, eval_control, eval_data, quiet, catalog_dir):
    """Fine-tune a language's neurons (or a baseline) and save the best checkpoint as an adapter.

    \b
    Example:
      lape-hub finetune --model gemma-3-270m --lang mt --corpus ../shared/data/sib200 --tokens 40000
    """
    require("torch", "finetune", purpose="lape-hub finetune")
    require("transformers", "finetune", purpose="lape-hub finetune")
    tasks = task_list(eval_tasks, ()) if eval_tasks else []   # bad task names fail before training
    if not no_record:  # the run is recorded there: a new catalog's parent must exist
        catalog_root(catalog_dir, create=True)
    if out_dir is not None:
        from lape_hub.output_paths import check_output_dir

        out_dir = check_output_dir(out_dir, create=True, catalog_root=catalog_dir)
    from lape_hub.device import apply_threads, resolve_dtype_name
    from lape_hub.finetune import FinetuneConfig
    from lape_hub.finetune import finetune as run
    from lape_hub.languages import resolve_language

    apply_threads(threads, device=device, dtype=resolve_dtype_name(dtype, device))
    cfg = FinetuneConfig(
        model=model, lang=resolve_language(lang).code, corpus=corpus, method=method, refset=refset,
        components=components, train_split=train_split, val_split=val_split, train_tokens=train_tokens,
        val_tokens=val_tokens, seq_len=seq_len, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        grad_clip=grad_clip, eval_every=eval_every, checkpoint_every=checkpoint_every, seed=seed,
        lora_rank=lora_rank, lora_alpha=lora_alpha, lora_match=lora_match, dtype=dtype, device=device)
    res = run(cfg, out_dir, catalog=catalog_dir, record=not no_record, fresh=fresh, progress=not quiet)
    a = res.config
    share = f" ({100 * a.share:.3f} % of the model)" if a.share else ""
    click.echo(f"{a.method} · {a.model} · {a.lang}: {a.trainable_params:,} trainable parameters{share}")
    click.echo(f"steps {res.steps}, tokens {res.tokens:,}, best val loss {res.best_val_loss:.4f} "
               f"at step {res.best_step} ({res.seconds:.0f} s, {cfg.dtype})")
    click.echo(f"signature: {a.signature}")
    click.echo(f"adapter: {res.adapter_dir}")
    if res.catalog_path:
        click.echo(f"catalog: {res.catalog_path}")
    if tasks:
        _evaluate_best(model, a.lang, res.adapter_dir, tasks, limit=eval_limit, split=eval_split,
                       controls=split_langs(eval_control), data_dir=eval_data, device=device,
                       record=not no_record, catalog_dir=catalog_dir)


def _evaluate_best(model, lang, adapter_dir, tasks, *, limit, split, controls, data_dir, device,
                   record, catalog_dir) -> None:
    """Evaluate the saved best checkpoint (reloaded from its adapter folder, as a user would)."""
    from lape_hub.catalog import Catalog
    from lape_hub.evaluation.evaluator import evaluate_suite, load_system
    from lape_hub.evaluation.results import format_rows

    catalog = Catalog(catalog_dir) if record else None
    system = load_system(model, adapter=adapter_dir, device=device, catalog=catalog)
    runs = evaluate_suite(system, lang, tasks, control_langs=controls, resume=True, split=split,
                          limit=limit, data_dir=data_dir, catalog=catalog, record=record,
                          log=lambda line: click.echo(line, err=True))
    rows = [r for run in runs for r in run.rows]
    if rows:
        click.echo(f"evaluation of {system.run_id} ({split}):")
        print_table(format_rows(rows))
    for run in runs:
        for task, why in run.skipped.items():
            click.echo(f"skipped {task}: {why}")


@click.command()
@click.argument("adapter", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True,
              help="Folder for the merged model (transformers save_pretrained layout); created with "
                   "missing parents. An existing one is replaced only if it holds a config.json "
                   "(a model folder); never inside the catalog or the cache.")
@click.option("--base", default=None,
              help="Base model (alias, repo id or folder; default: the adapter's model). Checked for compatibility.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="dtype of the written weights (the merge itself always runs in float32).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads (default: torch's).")
def merge(adapter, out_dir, base, dtype, threads):
    """Merge an adapter into its base model and write a full model folder.

    \b
    Example:
      lape-hub merge runs/finetune/gemma-3-270m/mlt_Latn/lape-sparse-0123abcd4567/adapter -o merged/mlt
    """
    from lape_hub.output_paths import check_output_dir

    out_dir = check_output_dir(out_dir, create=True, replaces=True, marker="config.json")
    require("torch", "finetune", purpose="lape-hub merge")
    require("transformers", "finetune", purpose="lape-hub merge")
    from lape_hub.device import apply_threads
    from lape_hub.sparse_adapter import AdapterConfig, merge_adapter

    apply_threads(threads)
    cfg = AdapterConfig.load(adapter)
    path = merge_adapter(adapter, out_dir, base=base, dtype=dtype)
    click.echo(f"merged {cfg.method} adapter ({cfg.signature}) into {base or cfg.model}")
    click.echo(f"wrote {path}")
