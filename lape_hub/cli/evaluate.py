"""``lape-hub eval`` (run tasks, write ``evals`` rows, print a table) and
``lape-hub eval compare`` (paired bootstrap between two systems' stored results).

Example::

    $ lape-hub eval --model gemma-3-270m --lang mlt_Latn --tasks translation,topic --limit 16
    $ lape-hub eval compare --model gemma-3-270m --lang mlt_Latn --a base --b 0f3c9a1b2d4e
"""
from __future__ import annotations

import click

from lape_hub.cli._common import (LANGS_SYNTAX, POSITIVE, catalog_option, langs_callback,
                                  open_catalog, print_table, split_langs, task_list)

_TASKS = "translation, topic, belebele, perplexity, general"


@click.group(invoke_without_command=True)
@click.option("--model", default=None, help="Base model: registry alias, Hugging Face repo id or local folder.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None,
              help="Adapter folder to apply (lape_adapter.json); refused if made for another model.")
@click.option("--merged", type=click.Path(exists=True, file_okay=False), default=None,
              help="A merged model folder (lape-hub merge) to evaluate instead of --model.")
@click.option("--lang", default=None, help="Target language (FLORES-200 code or any accepted form).")
@click.option("--tasks", "tasks", multiple=True, default=None,
              help=f"Comma-separated tasks ({_TASKS}); default: all but general.")
@click.option("--limit", type=POSITIVE, default=None, help="First N examples of each task (quick checks).")
@click.option("--split", type=click.Choice(["dev", "test"]), default="test", show_default=True,
              help="Split evaluated on.")
@click.option("--direction", type=click.Choice(["both", "to-en", "from-en"]), default="both",
              show_default=True, help="Translation: X->English, English->X or both.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="FLORES/SIB-200 folder (<data>/<lang>/<split>.tsv; default $LAPE_HUB_EVAL_DATA "
                   "or ../shared/data/sib200).")
@click.option("--belebele-dir", type=click.Path(file_okay=False), default=None,
              help="Local Belebele files (<dir>/<lang>.jsonl; default: <data>/../belebele, then the Hub).")
@click.option("--ppl-langs", multiple=True, callback=langs_callback,
              help=f"More languages for perplexity (besides LANG and English); {LANGS_SYNTAX}.")
@click.option("--general-tasks", multiple=True,
              help="lm-eval tasks for 'general' (default: mmlu,hellaswag,arc_easy,arc_challenge,piqa,winogrande).")
@click.option("--lm-eval-include", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of extra lm-eval task YAML files.")
@click.option("--batch-size", type=POSITIVE, default=16, show_default=True,
              help="Examples per forward pass.")
@click.option("--max-new-tokens", type=POSITIVE, default=128, show_default=True,
              help="Longest generated answer, in tokens.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--dtype", default=None, help="Weights dtype (default: bfloat16 where the device supports it).")
@click.option("--threads", type=POSITIVE, default=None, help="torch CPU threads.")
@click.option("--no-record", is_flag=True, help="Do not write the rows to the catalog's evals table.")
@catalog_option
@click.pass_context
def eval_(ctx, model, adapter, merged, lang, tasks, limit, split, direction, data_dir, belebele_dir, ppl_langs,
          general_tasks, lm_eval_include, batch_size, max_new_tokens, device, dtype, threads,
          no_record, catalog_dir):
    """Evaluate a model (base, with an adapter, or merged) on the paper's tasks.

    \b
    Example:
      lape-hub eval --model gemma-3-270m --lang fr --tasks translation --limit 16
      lape-hub eval --model gemma-3-270m --adapter runs/.../adapter --lang mt --tasks topic
    """
    if ctx.invoked_subcommand is not None:
        return
    if not model or not lang:
        raise click.UsageError("eval needs --model and --lang (or a subcommand: compare)")
    if limit is not None and limit < 1:
        raise click.UsageError("--limit must be >= 1")
    from lape_hub.evaluation.evaluator import DEFAULT_TASKS

    tasks_ = task_list(tasks, DEFAULT_TASKS)
    from lape_hub.languages import resolve_language

    code = resolve_language(lang).code   # a bad language fails before the model loads

    import torch

    from lape_hub.evaluation.evaluator import evaluate, load_system
    from lape_hub.evaluation.generation import GenerationSettings
    from lape_hub.evaluation.results import format_rows

    if threads:
        torch.set_num_threads(threads)
    catalog = None if no_record else open_catalog(catalog_dir)
    system = load_system(model, adapter=adapter, merged=merged, device=device, dtype=dtype,
                         catalog=catalog)
    run = evaluate(system, code, tasks_, split=split, limit=limit, data_dir=data_dir,
                   generation=GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size),
                   batch_size=batch_size, perplexity_langs=split_langs(ppl_langs),
                   general_tasks=split_langs(general_tasks), general_include=lm_eval_include,
                   belebele_dir=belebele_dir, directions=direction, catalog=catalog, record=not no_record,
                   log=lambda line: click.echo(line, err=True))
    click.echo(f"{system.name}@{system.revision} · {system.method} {system.run_id} · {code} · {split}")
    print_table(format_rows(run.rows))
    for row in run.rows[:1]:
        click.echo(f"signature: {row['signature']}")
    sigs = sorted({(r["metric"], r["metric_signature"]) for r in run.rows if r["task"] == "translation"})
    for metric, sig in sigs:
        click.echo(f"{metric}: {sig}")
    for task, why in run.skipped.items():
        click.echo(f"skipped {task}: {why}")
    if run.paths:
        click.echo(f"wrote {len(run.rows)} rows to {len(run.paths)} evals entries")
    if not run.rows:
        from lape_hub.errors import LapeHubError

        raise LapeHubError("no task could run: " + "; ".join(run.skipped.values()))


@eval_.command()
@click.option("--model", required=True, help="Registry alias (as stored in the evals table).")
@click.option("--lang", required=True, help="Target language (FLORES-200 code or any accepted form).")
@click.option("--a", "run_a", default="base", show_default=True, help="Run id of system A (or base).")
@click.option("--b", "run_b", required=True, help="Run id of system B.")
@click.option("--task", default=None, help="Only this task.")
@click.option("--split", default="test", show_default=True, help="Split of the stored results.")
@click.option("--samples", type=POSITIVE, default=1000, show_default=True, help="Bootstrap resamples.")
@catalog_option
def compare(model, lang, run_a, run_b, task, split, samples, catalog_dir):
    """Paired bootstrap between two systems' stored results on the same examples.

    \b
    Example:
      lape-hub eval compare --model gemma-3-270m --lang mt --a base --b 0f3c9a1b2d4e
    """
    from lape_hub.evaluation.significance import compare_systems
    from lape_hub.languages import resolve_language

    rows = compare_systems(open_catalog(catalog_dir), model=model,
                           lang=resolve_language(lang).code, run_a=run_a, run_b=run_b,
                           task=task, split=split, n=samples)
    if not rows:
        from lape_hub.errors import NotInCatalogError

        raise NotInCatalogError(f"no results of both {run_a} and {run_b} for {model} · {lang} "
                                   f"({split}); run lape-hub eval on both first")
    click.echo(f"A = {run_a}, B = {run_b}; delta = B - A with a 95% interval")
    print_table([{"task": r["task"], "direction": r["direction"], "metric": r["metric"],
                  "n": str(r["n"]), "A": f"{r['a']:.2f}", "B": f"{r['b']:.2f}",
                  "delta": f"{r['delta']:+.2f}", "95% CI": f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]",
                  "p": f"{r['p_value']:.3f}", "test": r["test"]} for r in rows])
