"""Read-only commands: fetch, sql, overlap, list. They never import torch/transformers
(except ``fetch --format pt``, which writes a torch file)."""
from __future__ import annotations

import sys

import click

from lape_hub.cli._common import (catalog_option, human_bytes, open_catalog, print_table,
                                  split_langs)


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
@click.option("--lang", required=True, help="FLORES-200 code, ISO 639-1/3 or English name.")
@click.option("--refset", default=None, help="Reference set (default: paper-12 if present).")
@click.option("--selection", default=None, help="Selection key, e.g. top0.05-f0.95-b0.95.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "json", "pt"]), default=None,
              help="Output format (default: from -o's suffix, else parquet).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the set (default: ./MODEL.LANG.FORMAT).")
@catalog_option
@remote_options
def fetch(model, lang, refset, selection, fmt, output, catalog_dir, remote, hub_repo, revision):
    """Write one language's neuron set and print its summary.

    Reads the local catalog; with --remote/--hub-repo (or when the local catalog lacks the
    set and a Hub repo is configured) downloads just that model's neuron partitions from
    the Hub dataset repo into the cache (HF_HUB_OFFLINE=1 serves from the cache).
    """
    from lape_hub.errors import NotInCatalogError
    from lape_hub.formats import format_from_path, write_neuron_sets

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
    fmt = format_from_path(output, fmt) if output else (fmt or "parquet")
    output = output or f"{ns.model}.{ns.lang}.{fmt}"
    write_neuron_sets([ns], output, fmt)
    click.echo(ns.summary())
    click.echo(f"wrote {output} ({fmt})")


@click.command()
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
              default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the result to a file (required for parquet).")
@click.option("--max-rows", type=int, default=40, show_default=True,
              help="Rows shown in table format.")
@catalog_option
@remote_options
@click.option("--model", default=None, help="With --remote: download only this model's files.")
def sql(query, fmt, output, max_rows, catalog_dir, remote, hub_repo, revision, model):
    """Run read-only DuckDB SQL over views of every catalog table.

    \b
    Tables: activation_counts, lape, neurons (and adapters when present).
    Example:
      lape-hub sql "SELECT lang, count(*) FROM neurons WHERE model='gemma-3-270m' GROUP BY lang"
    """
    from lape_hub.query import run_sql

    if remote or hub_repo:
        cat = _remote(hub_repo, revision, **({"model": model} if model else {}))
    else:
        cat = open_catalog(catalog_dir)
    rel = run_sql(cat, query)
    if fmt == "table" and output is None:
        rel.show(max_rows=max_rows, max_width=200)
        return
    table = rel.to_arrow_table()
    if fmt == "parquet":
        if output is None:
            raise click.UsageError("--format parquet needs -o PATH")
        import pyarrow.parquet as pq

        pq.write_table(table, output)
        click.echo(f"wrote {table.num_rows} rows to {output}")
        return
    if fmt in ("csv", "table"):
        import pyarrow.csv as pacsv

        sink = output or sys.stdout.buffer
        pacsv.write_csv(table, sink)
    else:
        import json

        text = "\n".join(json.dumps(r, default=str) for r in table.to_pylist())
        if output:
            with open(output, "w") as f:
                f.write(text + "\n")
        else:
            click.echo(text)


@click.command()
@click.option("--model", required=True)
@click.option("--refset", default="paper-12", show_default=True)
@click.option("--langs", multiple=True, help="Languages to include (default: all in the set).")
@click.option("--metric", type=click.Choice(["count", "jaccard"]), default="count",
              show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default="table",
              show_default=True)
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
