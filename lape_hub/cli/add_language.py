"""``lape-hub add-language``: one command from a language code to a published neuron set,
adapter and evaluations (thin: parse, call :func:`lape_hub.add_language.add_language`, print).

Example::

    $ lape-hub add-language --model gemma-3-270m --lang mt --tokens 20000 \\
          --eval-tasks perplexity --dry-run /tmp/stage
"""
from __future__ import annotations

import click

from lape_hub.cli._common import POSITIVE, catalog_option, catalog_root, task_list
from lape_hub.errors import require


@click.command("add-language")
@click.option("--model", required=True, help="Registry alias or Hugging Face repo id.")
@click.option("--lang", required=True,
              help="The language: FLORES-200 code, ISO 639-1/3, BCP-47 tag or English name.")
@click.option("--refset", default=None,
              help="Reference set (registry/refsets.toml) holding the language (default: the "
                   "smallest one that does, paper-12 first).")
@click.option("--corpus", default=None,
              help="Text counted on and fine-tuned on: SIB-200 layout folder, file or Hub "
                   "dataset (default: ../shared/data/sib200).")
@click.option("--split", default="train", show_default=True,
              help="Split counted on and trained on.")
@click.option("--max-tokens", type=POSITIVE, default=None,
              help="Counting token budget per language (default: the whole split).")
@click.option("--finetune/--no-finetune", default=True, show_default=True,
              help="Sparse fine-tune (lape-sparse) the language's neurons.")
@click.option("--tokens", "train_tokens", type=POSITIVE, default=None,
              help="Fine-tuning token budget (default: the whole split).")
@click.option("--val-split", default="dev", show_default=True,
              help="Split fine-tuning validates on (the best checkpoint is kept).")
@click.option("--seq-len", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per sequence (counting and fine-tuning).")
@click.option("--batch-size", type=POSITIVE, default=2, show_default=True,
              help="Fine-tuning sequences per optimizer step.")
@click.option("--eval-every", type=POSITIVE, default=50, show_default=True,
              help="Fine-tuning: validate every N steps.")
@click.option("--eval-tasks", multiple=True, default=None,
              help="Evaluate the adapter and the base model on these tasks (comma-separated: "
                   "translation, topic, belebele, perplexity, general; default: none).")
@click.option("--eval-limit", type=POSITIVE, default=None, help="First N examples of each task.")
@click.option("--eval-split", type=click.Choice(["dev", "test"]), default="test",
              show_default=True, help="Split the eval tasks run on.")
@click.option("--eval-data", type=click.Path(file_okay=False), default=None,
              help="FLORES/SIB-200 folder for the eval tasks (default: as lape-hub eval).")
@click.option("--publish", is_flag=True,
              help="Publish what the Hub lacks (catalog entries, the adapter). Without it (or "
                   "--dry-run) nothing is published.")
@click.option("--dry-run", "dry_run", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Stage the repos in DIR (one subfolder each) instead of "
                                  "publishing; works offline (HF_HUB_OFFLINE=1).")
@click.option("--hub-repo", default=None, metavar="ORG/NAME",
              help="The catalog's dataset repo (default: $LAPE_HUB_REPO or the config).")
@click.option("--namespace", default=None, metavar="ORG",
              help="Where the adapter repo goes (default: [hub] adapter_namespace, else the "
                   "catalog repo's namespace).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto",
              show_default=True,
              help="Counting and fine-tuning dtype (auto: bfloat16 where the device is fast "
                   "at it).")
@click.option("--bos", type=click.Choice(["count", "skip"]), default="count", show_default=True,
              help="Count BOS positions (part of the counts' identity, as in build).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@catalog_option
def add_language(model, lang, refset, corpus, split, max_tokens, finetune, train_tokens,
                 val_split, seq_len, batch_size, eval_every, eval_tasks, eval_limit, eval_split,
                 eval_data, publish, dry_run, hub_repo, namespace, device, dtype, bos, quiet,
                 catalog_dir):
    """Add a language end to end: plan, count what is missing, LAPE and neuron sets, sparse
    fine-tune, evaluate, publish what the Hub lacks. Every stage skips what is already done,
    so a rerun after a crash resumes.

    \b
    Example:
      lape-hub add-language --model gemma-3-270m --lang mt --tokens 20000 \\
          --eval-tasks perplexity --dry-run /tmp/stage
    """
    if publish and dry_run is not None:
        raise click.UsageError("give --publish or --dry-run DIR, not both")
    tasks = task_list(eval_tasks, ()) if eval_tasks else []
    root = catalog_root(catalog_dir, create=True)
    require("torch", "build", purpose="lape-hub add-language")
    require("transformers", "build", purpose="lape-hub add-language")
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from lape_hub.add_language import add_language as run
    from lape_hub.catalog import Catalog

    result = run(model, lang, refset=refset, corpus=corpus, split=split, max_tokens=max_tokens,
                 finetune=finetune, train_tokens=train_tokens, val_split=val_split,
                 seq_len=seq_len, batch_size=batch_size, eval_every=eval_every,
                 eval_tasks=tasks, eval_limit=eval_limit, eval_split=eval_split,
                 eval_data=eval_data, publish=publish, dry_run=dry_run, hub_repo=hub_repo,
                 namespace=namespace, device=device, dtype=dtype, bos=bos,
                 catalog=Catalog(root), progress=not quiet, echo=click.echo)
    click.echo("summary:")
    for line in result.summary_lines():
        click.echo(line)
