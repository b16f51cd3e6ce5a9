"""Read-only commands: fetch, sql, overlap, list. They never import torch/transformers
(except ``fetch --format pt``, which writes a torch file)."""
from __future__ import annotations

import sys

import click

from lape_hub.cli._common import (LANGS_SYNTAX, POSITIVE_FLOAT, catalog_option, human_bytes,
                                  langs_callback, open_catalog, print_table, split_langs)


def remote_options(f):
    f = click.option("--revision", default=None,
                     help="Remote catalog revision (branch, tag or commit; pinned once resolved).")(f)
    f = click.option("--hub-repo", default=None,
                     help="Remote catalog dataset repo ORG/NAME (env LAPE_HUB_REPO).")(f)
    f = click.option("--remote", is_flag=True,
                     help="Read the Hub dataset repo instead of the local catalog.")(f)
    return f


def _remote(hub_repo, revision, **where):
    from lape_hub.remote import remote_catalog

    return remote_catalog(hub_repo, revision=revision, **where)


@click.command()
@click.option("--model", required=True, help="Registry alias or Hugging Face repo id.")
@click.option("--lang", required=True,
              help="FLORES-200 code, ISO 639-1/3, BCP-47 tag (zh-TW, mt_MT) or English name; a "
                   "script FLORES-200 lacks (sr-Latn) is refused.")
@click.option("--refset", default=None, help="Reference set (default: paper-12 if present).")
@click.option("--selection", default=None, help="Selection key, e.g. top0.05-f0.95-b0.95.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "json", "pt"]), default=None,
              help="Output format (default: from -o's suffix, which must agree; parquet "
                   "without -o).")
@click.option("-o", "--output", default=None,
              help="Where to write the set (default: ./MODEL.LANG.FORMAT); its folder must "
                   "exist, and it may not lie inside the catalog or the cache.")
@catalog_option
@remote_options
def fetch(model, lang, refset, selection, fmt, output, catalog_dir, remote, hub_repo, revision):
    """Write one language's neuron set and print its summary.

    Reads the local catalog; with --remote/--hub-repo (or when the local catalog lacks the
    set and a Hub repo is configured) downloads just that model's neuron partitions from
    the Hub dataset repo into the cache (HF_HUB_OFFLINE=1 serves from the cache).
    """
    from lape_hub.errors import NotInCatalogError, require
    from lape_hub.formats import write_neuron_sets
    from lape_hub.output_paths import NEURON_SET_SUFFIXES, check_output_file

    if output is not None:  # refuse a bad -o before any download
        output, fmt = check_output_file(output, formats=NEURON_SET_SUFFIXES, fmt=fmt,
                                        catalog_root=catalog_dir)
    if fmt == "pt":
        require("torch", "build", purpose="writing .pt files")

    def from_hub():
        where = {"refset": refset} if refset else {}
        cat = _remote(hub_repo, revision, model=model, tables=["neurons"], **where)
        return cat.neuron_set(model, lang, refset=refset, selection=selection)

    if remote or hub_repo:
        ns = from_hub()
    else:
        try:
            ns = open_catalog(catalog_dir).neuron_set(model, lang, refset=refset,
                                                      selection=selection)
        except NotInCatalogError:
            from lape_hub.config import configured_hub_repo

            if configured_hub_repo() is None:
                raise
            ns = from_hub()
    if output is None:
        fmt = fmt or "parquet"
        output, fmt = check_output_file(f"{ns.model}.{ns.lang}.{fmt}", formats=NEURON_SET_SUFFIXES,
                                        fmt=fmt, catalog_root=catalog_dir)
    write_neuron_sets([ns], output, fmt)
    click.echo(ns.summary())
    click.echo(f"wrote {output} ({fmt})")


@click.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
              default=None,
              help="Output format (default: from -o's suffix, which must agree; table "
                   "without -o). json: one object per line.")
@click.option("-o", "--output", default=None,
              help="Write the result to FILE.csv, .json/.jsonl or .parquet (atomically); its "
                   "folder must exist, and it may not lie inside the catalog or the cache.")
@click.option("--max-rows", type=click.IntRange(min=1), default=40, show_default=True,
              help="Rows shown in table format.")
@click.option("--timeout", "timeout_s", type=POSITIVE_FLOAT, default=None,
              help="Stop the query after SECONDS (default 60, or [sql] timeout in the "
                   "config file).")
@click.option("--memory-limit", default=None,
              help="DuckDB memory limit, e.g. 4GB, 512MiB or 25% of RAM (default 50%, or "
                   "[sql] memory_limit in the config file).")
@catalog_option
@remote_options
@click.option("--model", default=None, help="With --remote: download only this model's files.")
def sql(query, fmt, output, max_rows, timeout_s, memory_limit, catalog_dir, remote, hub_repo,
        revision, model):
    """Run one read-only DuckDB statement over views of every catalog table.

    \b
    Tables: activation_counts, lape, neurons (and adapters when present).
    Only SELECT (and EXPLAIN of a SELECT) runs; DuckDB opens no file, so nothing can be
    written. Limits: --timeout, --memory-limit (see docs/security.md).
    Example:
      lape-hub sql "SELECT lang, count(*) FROM neurons WHERE model='gemma-3-270m' GROUP BY lang"
    """
    from lape_hub.config import load_sql_limits
    from lape_hub.errors import OutputPathError
    from lape_hub.query import render_table, result_table, write_result

    limits = load_sql_limits(timeout_s, memory_limit)
    if output is not None:  # refuse a bad -o before any download or query
        from lape_hub.output_paths import QUERY_SUFFIXES, check_output_file

        if fmt == "table":
            raise OutputPathError("--format table is for the terminal; write -o FILE.csv, "
                                  ".json or .parquet")
        output, fmt = check_output_file(output, formats=QUERY_SUFFIXES, fmt=fmt,
                                        catalog_root=catalog_dir)
    elif fmt == "parquet":
        raise OutputPathError("--format parquet needs -o FILE.parquet")
    if remote or hub_repo:
        cat = _remote(hub_repo, revision, **({"model": model} if model else {}))
    else:
        cat = open_catalog(catalog_dir)
    if fmt in (None, "table"):
        click.echo(render_table(cat, query, limits=limits, max_rows=max_rows, max_width=200),
                   nl=False)
        return
    table = result_table(cat, query, fmt, limits=limits)
    if output is None:
        write_result(table, fmt, sys.stdout.buffer)
        return
    n = write_result(table, fmt, output)
    click.echo(f"wrote {n} rows to {output} ({fmt})")


@click.command()
@click.option("--model", required=True, help="Registry alias or Hugging Face repo id.")
@click.option("--refset", default="paper-12", show_default=True,
              help="Reference set whose neuron sets are compared.")
@click.option("--langs", multiple=True, callback=langs_callback,
              help=f"Languages to include (default: all in the set); {LANGS_SYNTAX}.")
@click.option("--metric", type=click.Choice(["count", "jaccard"]), default="count",
              show_default=True,
              help="count: neurons two sets share; jaccard: shared / union.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table",
              show_default=True, help="Aligned table, or CSV with a header row.")
@catalog_option
def overlap(model, refset, langs, metric, fmt, catalog_dir):
    """Pairwise overlap of language neuron sets (shared neurons or Jaccard)."""
    from lape_hub.overlap import overlap_matrix

    m = overlap_matrix(open_catalog(catalog_dir), model, refset=refset,
                       langs=split_langs(langs) or None, metric=metric)
    if fmt == "csv":
        click.echo(m.to_csv(), nl=False)
        return
    vals = m.values
    rows = []
    for i, a in enumerate(m.langs):
        row = {"lang": a}
        for j, b in enumerate(m.langs):
            row[b[:8]] = int(vals[i, j]) if metric == "count" else f"{vals[i, j]:.3f}"
        rows.append(row)
    print_table(rows)


@click.command("list")
@catalog_option
def list_(catalog_dir):
    """What the catalog holds: models × reference sets × languages, sizes."""
    cat = open_catalog(catalog_dir)
    rows = cat.summary()
    click.echo(f"catalog: {cat.root}")
    for r in rows:
        r["size"] = human_bytes(r.pop("bytes"))
    print_table(rows, ["table", "model", "set", "selection", "langs", "files", "size"])
