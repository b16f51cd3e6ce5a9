"""plan / build / verify: compute what the catalog lacks, and check that sets are real."""
from __future__ import annotations

import click

from lape_hub.cli._common import (LANGS_SYNTAX, POSITIVE, RATE, catalog_option, langs_callback,
                                  open_catalog, split_langs)
from lape_hub.errors import require

_corpus_opts = [
    click.option("--corpus", required=True,
                 help="A folder with one subfolder per FLORES-200 code (SIB-200 layout), a "
                      ".txt/.jsonl/.parquet file, or a Hugging Face dataset name."),
    click.option("--split", default="train", show_default=True,
                 help="Corpus split to count on (train, dev, test; a Hub split name)."),
    click.option("--max-tokens", type=POSITIVE, default=None,
                 help="Token budget per language (default: the whole split)."),
]


def _counting_opts(f):
    """--dtype and --bos: how tokens are counted (part of the counts' identity)."""
    f = click.option("--bos", type=click.Choice(["count", "skip"]), default="count",
                     show_default=True,
                     help="Count the BOS positions (as the reference code does), or skip them "
                          "(BOS still goes into the model). Part of the counts' identity.")(f)
    f = click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto",
                     show_default=True,
                     help="Counting dtype: auto = bfloat16 on CUDA and on CPUs with bf16 "
                          "instructions, else float32. Part of the counts' identity.")(f)
    return f


def _threads_opt(f):
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="CPU threads (default: the fastest on this machine, measured "
                             "once and cached in the user cache folder).")(f)


def _selection_opts(f):
    f = click.option("--top-rate", type=RATE, default=0.05, show_default=True,
                     help="LAPE selection: share of neurons with the lowest entropy kept, in "
                          "(0, 1].")(f)
    f = click.option("--filter-rate", type=RATE, default=0.95, show_default=True,
                     help="LAPE selection: activation-probability quantile a neuron must "
                          "reach in some language, in (0, 1].")(f)
    f = click.option("--bar-rate", type=RATE, default=0.95, show_default=True,
                     help="LAPE selection: quantile above which a language counts as "
                          "selected by a neuron, in (0, 1].")(f)
    return f


def _params(top_rate, filter_rate, bar_rate):
    from lape_hub.lape import SelectionParams

    try:
        return SelectionParams(top_rate, filter_rate, bar_rate)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command()
@click.option("--model", default=None,
              help="Registry alias or Hugging Face repo id (required unless --changed-since).")
@click.option("--refset", default=None,
              help="Reference set (registry/refsets.toml) whose LAPE and neuron sets to plan "
                   "(required unless --changed-since).")
@click.option("--changed-since", metavar="REV", default=None,
              help="Instead of reading the catalog: what the registry change since git "
                   "revision REV asks to build (new models, languages added to a refset).")
@click.option("--langs", multiple=True, callback=langs_callback,
              help="With --format json/github-matrix and no --changed-since: the languages of "
                   f"the one request (default: all the catalog lacks); {LANGS_SYNTAX}.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github-matrix"]),
              default="text", show_default=True,
              help="json / github-matrix: the build requests (github-matrix prints "
                   "matrix=[...] for $GITHUB_OUTPUT), not the catalog check.")
@click.option("--gpu-runner", envvar="LAPE_GPU_RUNNER", default=None,
              help="github-matrix: runner label for models over 1B parameters (env "
                   "LAPE_GPU_RUNNER); without one they are left out with a notice.")
@click.option("--corpus", default="sib200", show_default=True,
              help="Corpus path or id the counts are (to be) computed on.")
@click.option("--split", default="train", show_default=True,
              help="Corpus split the counts are (to be) computed on.")
@click.option("--max-tokens", type=POSITIVE, default=None,
              help="Token budget per language of the counts (default: the whole split).")
@_counting_opts
@click.option("--device", default="cpu", show_default=True,
              help="The device build would count on (decides --dtype auto).")
@_selection_opts
@catalog_option
def plan(model, refset, changed_since, langs, fmt, gpu_runner, corpus, split, max_tokens, dtype,
         bos, device, top_rate, filter_rate, bar_rate, catalog_dir):
    """List missing activation counts and stale LAPE / neuron entries (exit 0 either way),
    and print the one build command that brings the catalog up to date.

    \b
    With --changed-since REV (or --format json/github-matrix) it prints build requests
    instead, e.g. for the publish-language workflow:
      lape-hub plan --changed-since HEAD~1 --format github-matrix >> "$GITHUB_OUTPUT"
    """
    if changed_since is not None or fmt != "text":
        from lape_hub.registry_changes import changed_since as diff, format_requests, request_for

        if changed_since is not None:
            reqs = diff(changed_since)
        elif model and refset:
            reqs = [request_for(model, refset, split_langs(langs))]
        else:
            raise click.UsageError("--format json/github-matrix needs --changed-since REV, "
                                   "or --model and --refset")
        click.echo(format_requests(reqs, fmt, gpu_runner=gpu_runner or None))
        return
    if not model or not refset:
        raise click.UsageError("plan needs --model and --refset (or --changed-since REV)")
    from lape_hub.builder import corpus_id, plan as make_plan, resolve_counting_dtype

    cid = corpus_id(corpus, split, max_tokens, dtype=resolve_counting_dtype(dtype, device), bos=bos)
    p = make_plan(open_catalog(catalog_dir), model, refset, corpus=cid, source=corpus,
                  params=_params(top_rate, filter_rate, bar_rate))
    click.echo(p.describe())


@click.command()
@click.option("--model", required=True,
              help="Registry alias, Hugging Face repo id or local folder.")
@click.option("--refset", required=True,
              help="Reference set (registry/refsets.toml) whose LAPE and neuron sets to build.")
@click.option("--lang", "langs", multiple=True, callback=langs_callback,
              help=f"Only these languages (default: all of the refset); {LANGS_SYNTAX}.")
@_corpus_opts[0]
@_corpus_opts[1]
@_corpus_opts[2]
@click.option("--seq-len", type=POSITIVE, default=512, show_default=True,
              help="Tokens per packed sequence.")
@click.option("--batch-size", type=POSITIVE, default=8, show_default=True,
              help="Sequences per forward pass.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@_counting_opts
@_threads_opt
@click.option("--text-column", default=None,
              help="Column of .jsonl/.parquet/Hub text (default: text, or the Hub preset).")
@click.option("--checkpoint-every", type=POSITIVE, default=64, show_default=True,
              help="Checkpoint counts every N sequences.")
@_selection_opts
@click.option("--quiet", is_flag=True, help="No progress bars.")
@catalog_option
def build(model, refset, langs, corpus, split, max_tokens, seq_len, batch_size, device, dtype,
          bos, threads, text_column, checkpoint_every, top_rate, filter_rate, bar_rate, quiet, catalog_dir):
    """Compute missing activation counts, then LAPE and neuron sets for the reference set.

    \b
    Scale out with torchrun (ranks shard the corpus, counts are all-reduced):
      torchrun --nproc-per-node 2 $(which lape-hub) build --model M --refset R --corpus DIR
    """
    require("torch", "build", purpose="lape-hub build")
    require("transformers", "build", purpose="lape-hub build")
    from lape_hub.builder import build as run_build

    if quiet:  # transformers' own "Loading weights" bar too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    report = run_build(open_catalog(catalog_dir, create=True), model, refset, corpus, split=split,
                       langs=split_langs(langs) or None, max_tokens=max_tokens, seq_len=seq_len,
                       batch_size=batch_size, device=device, dtype=dtype, bos=bos,
                       threads=threads, text_column=text_column, checkpoint_every=checkpoint_every,
                       params=_params(top_rate, filter_rate, bar_rate), progress=not quiet,
                       echo=click.echo, warn=lambda m: click.echo(m, err=True))
    from lape_hub.activation_counts import init_distributed

    if not init_distributed().is_main:  # the group exists by now: this only reads the rank
        return
    click.echo(f"counted {len(report.counted)} languages "
               f"({sum(report.tokens.values()):,} tokens) as {report.corpus}")
    if report.lape_updated:
        click.echo(f"LAPE and neuron sets of {refset} updated")
    elif report.waiting_for:
        more = ", …" if len(report.waiting_for) > 10 else ""
        click.echo(f"LAPE for {refset} waits for {len(report.waiting_for)} languages: "
                   f"{', '.join(report.waiting_for[:10])}{more}")
        click.echo(f"count them with: {report.next_command}")
    else:
        click.echo(f"LAPE and neuron sets of {refset} already current")


@click.command()
@click.option("--model", required=True,
              help="Registry alias, Hugging Face repo id or local folder.")
@click.option("--refset", default="paper-12", show_default=True,
              help="Reference set whose neuron sets are zeroed.")
@click.option("--langs", multiple=True, callback=langs_callback,
              help=f"Languages whose neurons are zeroed (default: all); {LANGS_SYNTAX}.")
@click.option("--eval-langs", multiple=True, callback=langs_callback,
              help="Languages perplexity is measured on (default: all of the refset); "
                   f"{LANGS_SYNTAX}.")
@click.option("--corpus", required=True, help="Held-out text (SIB-200 layout folder or file).")
@click.option("--split", default="dev", show_default=True, help="Held-out split.")
@click.option("--max-tokens", type=POSITIVE, default=4096, show_default=True,
              help="Held-out tokens per language.")
@click.option("--seq-len", type=click.IntRange(min=2), default=512, show_default=True,
              help="Tokens per evaluated sequence (>= 2: a token and its successor).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "markdown"]), default="table",
              show_default=True,
              help="table/markdown: baseline perplexity, then the increase in perplexity "
                   "points per zeroed set; csv: one row per cell.")
@_threads_opt
@catalog_option
def verify(model, refset, langs, eval_langs, corpus, split, max_tokens, seq_len, device, fmt,
           threads, catalog_dir):
    """Zero one language's neurons at a time; print perplexity increases on every language."""
    require("torch", "build", purpose="lape-hub verify")
    require("transformers", "build", purpose="lape-hub verify")
    from lape_hub.activation_counts import set_threads
    from lape_hub.verify import verify_neuron_sets

    if str(device).startswith("cpu"):
        set_threads(threads, dtype="float32")

    result = verify_neuron_sets(open_catalog(catalog_dir), model, refset=refset,
                                langs=split_langs(langs) or None,
                                eval_langs=split_langs(eval_langs) or None, corpus=corpus, split=split,
                                max_tokens=max_tokens, seq_len=seq_len, device=device)
    if fmt == "csv":
        click.echo(result.to_csv(), nl=False)
        return
    click.echo(f"perplexity on each column's language ({split} split); below the baseline row: "
               "increase in perplexity points (ppl - baseline) with the row's neurons zeroed"
               + ("\n" if fmt == "markdown" else ""))  # a blank line before a Markdown table
    if fmt == "markdown":
        click.echo(result.to_markdown())
    else:
        click.echo(result.format())
