"""``lape-hub report``: the paper-style comparison of one model · language from the catalog's
``evals`` table, as Markdown (printed, or written with ``-o``) plus a PNG and its data.

Example::

    $ lape-hub report --model gemma-3-270m --lang mt
    $ lape-hub report --model gemma-3-270m --lang mt -o docs/reports
"""
from __future__ import annotations

import click

from lape_hub.cli._common import catalog_option, catalog_root, open_catalog


@click.command()
@click.option("--model", required=True, help="Registry alias (as stored in the evals table).")
@click.option("--lang", required=True, help="Target language (FLORES-200 code or any accepted form).")
@click.option("--split", default="test", show_default=True, help="Split of the stored results.")
@click.option("-o", "--out", "out_dir", default=None,
              help="Folder to write <model>.<lang>.<split>.md, .png and the plotted data into "
                   "(created); without it the Markdown is printed and no picture is drawn.")
@click.option("--data-format", type=click.Choice(["parquet", "csv"]), default="parquet",
              show_default=True, help="Format of the data written beside the PNG.")
@catalog_option
def report(model, lang, split, out_dir, data_format, catalog_dir):
    """Base model vs every adapter of MODEL on LANG: target-language and English tasks side by
    side, 95 % intervals, mean ± sd over seeds (Markdown + PNG).

    \b
    Example:
      lape-hub report --model gemma-3-270m --lang mt -o docs/reports
    """
    from lape_hub.evaluation.report import build_report, write_report
    from lape_hub.languages import resolve_language

    code = resolve_language(lang).code
    catalog = open_catalog(catalog_dir)
    if out_dir is not None:
        from lape_hub.output_paths import check_output_dir

        check_output_dir(out_dir, create=True, catalog_root=catalog_root(catalog_dir))
    rep = build_report(catalog, model, code, split=split)
    if out_dir is None:
        click.echo(rep.to_markdown())
        return
    paths = write_report(rep, out_dir, data_format=data_format,
                         catalog_root=catalog_root(catalog_dir))
    click.echo(f"{len(rep.rows)} systems × {len(rep.columns)} metrics")
    click.echo(f"wrote {paths['markdown']}, {paths['png']} and {paths['data']}")
