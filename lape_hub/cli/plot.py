"""plot: pictures of the catalog and of fine-tuning (PNG plus the data beside it).

Example::

    $ lape-hub plot layers --model gemma-3-270m --refset flores-200 -o layers.png
    $ lape-hub plot overlap --model gemma-3-270m --refset flores-200 -o overlap.png
    $ lape-hub plot zeroing --result docs/gemma-3-270m.verify-paper-12.md -o zeroing.png
"""
from __future__ import annotations

import click

from lape_hub.cli._common import (LANGS_SYNTAX, POSITIVE, catalog_option, langs_callback,
                                  open_catalog, split_langs)

_TITLE = "Figure title (default: generated from the data)."


def _out_option(f):
    f = click.option("--data-format", type=click.Choice(["parquet", "csv"]), default="parquet",
                     show_default=True, help="Format of the data written beside the PNG.")(f)
    return click.option("-o", "--out", required=True,
                        help="The PNG to write; the data goes beside it (same stem).")(f)


def _check_out(out: str, catalog_dir: str | None = None) -> str:
    from lape_hub.output_paths import check_output_file

    path, _ = check_output_file(out, formats={"png": "png"}, catalog_root=catalog_dir,
                                create_parent=True)
    return str(path)


def _wrote(paths) -> None:
    png, data = paths
    click.echo(f"wrote {png}" + (f" and {data}" if data else ""))


@click.group()
def plot() -> None:
    """Draw a picture (PNG) and write its data beside it (Parquet or CSV)."""


@plot.command()
@click.option("--model", required=True, help="Registry alias or Hugging Face repo id.")
@click.option("--refset", default="paper-12", show_default=True, help="Reference set of the neuron sets.")
@click.option("--langs", multiple=True, callback=langs_callback,
              help=f"Languages (default: every language of the entry); {LANGS_SYNTAX}.")
@click.option("--order", type=click.Choice(["family", "given", "code"]), default="family",
              show_default=True, help="Row order: by family, as given, or by code.")
@click.option("--value", type=click.Choice(["auto", "count", "share"]), default="auto",
              show_default=True, help="Heatmap cells: neurons, or share of the language's set.")
@_out_option
@catalog_option
def layers(model, refset, langs, order, value, out, data_format, catalog_dir):
    """A language's neurons per layer; several languages as a heatmap ordered by family."""
    from lape_hub.plots.layers import layer_counts, plot_layers

    out = _check_out(out, catalog_dir)
    data = layer_counts(open_catalog(catalog_dir), model, refset,
                        split_langs(langs) or None, order=order)
    _wrote(plot_layers(data, out, value=value, data_format=data_format))


@plot.command()
@click.option("--model", required=True, help="Registry alias or Hugging Face repo id.")
@click.option("--refset", default="paper-12", show_default=True, help="Reference set of the neuron sets.")
@click.option("--langs", multiple=True, callback=langs_callback,
              help=f"Languages (default: every language of the entry); {LANGS_SYNTAX}.")
@click.option("--metric", type=click.Choice(["jaccard", "count"]), default="jaccard",
              show_default=True, help="jaccard: shared / union; count: shared neurons.")
@click.option("--order", type=click.Choice(["cluster", "family", "given"]), default="cluster",
              show_default=True, help="cluster: scipy average linkage on 1 - Jaccard; family: "
                                      "grouped by family and script.")
@_out_option
@catalog_option
def overlap(model, refset, langs, metric, order, out, data_format, catalog_dir):
    """The pairwise overlap heatmap of language neuron sets."""
    from lape_hub.overlap import overlap_matrix
    from lape_hub.plots.overlap import plot_overlap

    out = _check_out(out, catalog_dir)
    m = overlap_matrix(open_catalog(catalog_dir), model, refset=refset,
                       langs=split_langs(langs) or None, metric=metric)
    how = {"cluster": "clustered", "family": "grouped by family and script",
           "given": "given order"}[order]
    title = f"{model} · refset {refset}: {metric} of {len(m.langs)} neuron sets ({how})"
    _wrote(plot_overlap(m, out, order=order, title=title, data_format=data_format))


@plot.command()
@click.option("--result", "result_path", type=click.Path(dir_okay=False),
              help="A saved verify result (--format markdown or csv, or its Parquet/CSV table).")
@click.option("--model", help="Without --result: run verify on this model.")
@click.option("--refset", default="paper-12", show_default=True,
              help="Without --result: reference set whose neuron sets are zeroed.")
@click.option("--corpus", help="Without --result: held-out text (as for lape-hub verify).")
@click.option("--langs", multiple=True, callback=langs_callback,
              help=f"Without --result: languages whose neurons are zeroed; {LANGS_SYNTAX}.")
@click.option("--eval-langs", multiple=True, callback=langs_callback,
              help=f"Without --result: languages perplexity is measured on; {LANGS_SYNTAX}.")
@click.option("--split", default="dev", show_default=True, help="Without --result: held-out split.")
@click.option("--max-tokens", type=POSITIVE, default=4096, show_default=True,
              help="Without --result: held-out tokens per language.")
@click.option("--title", help=_TITLE)
@_out_option
@catalog_option
def zeroing(result_path, model, refset, corpus, langs, eval_langs, split, max_tokens, title, out,
            data_format, catalog_dir):
    """verify's perplexity-increase matrix as a heatmap (log scale, own language outlined)."""
    from lape_hub.plots.zeroing import compute_zeroing, plot_zeroing, read_verify_result

    out = _check_out(out, catalog_dir)
    if result_path:
        z = read_verify_result(result_path)
    elif model and corpus:
        z = compute_zeroing(open_catalog(catalog_dir), model, corpus=corpus, refset=refset,
                            langs=split_langs(langs) or None,
                            eval_langs=split_langs(eval_langs) or None, split=split,
                            max_tokens=max_tokens)
    else:
        raise click.UsageError("give --result PATH, or --model and --corpus to run verify")
    _wrote(plot_zeroing(z, out, title=title, data_format=data_format))
    own = sum(1 for l in z.langs if l in z.eval_langs and z.hardest_hit(l)[0] == l)
    click.echo(f"own language hit hardest in {own} of {len(z.langs)} rows")


@plot.command("weight-change")
@click.option("--adapter", type=click.Path(file_okay=False, exists=True),
              help="An adapter folder (any lape-hub method).")
@click.option("--merged", type=click.Path(file_okay=False, exists=True),
              help="A merged model folder (compare with --base).")
@click.option("--base", help="The base model (default for --adapter: the adapter's model).")
@click.option("--title", help=_TITLE)
@_out_option
def weight_change(adapter, merged, base, title, out, data_format):
    """|change| per layer and projection of an adapter or merged model against its base."""
    from lape_hub.plots.weight_change import (adapter_weight_change, merged_weight_change,
                                              plot_weight_change)

    out = _check_out(out)
    if bool(adapter) == bool(merged):
        raise click.UsageError("give exactly one of --adapter and --merged")
    if merged and not base:
        raise click.UsageError("--merged needs --base")
    wc = adapter_weight_change(adapter, base=base) if adapter else merged_weight_change(merged,
                                                                                        base)
    _wrote(plot_weight_change(wc, out, title=title, data_format=data_format))
    late = wc.late_layers()
    click.echo(f"late layers {late[0]}-{late[-1]}: down / mean(up, gate) = {wc.late_ratio():.2f}x")


@plot.command()
@click.option("--model", required=True, help="Registry alias, Hugging Face repo id or local folder.")
@click.option("--corpus", required=True, help="SIB-200/FLORES folder: <corpus>/<code>/<split>.tsv.")
@click.option("--target", required=True, help="The language compared with the pivots.")
@click.option("--pivots", multiple=True, callback=langs_callback,
              help=f"Pivot languages (default: en fr de es it ru zh ja ar); {LANGS_SYNTAX}.")
@click.option("--adapter", type=click.Path(file_okay=False, exists=True),
              help="Also measure the model with this adapter merged in (before/after).")
@click.option("--split", default="dev", show_default=True, help="Split of the parallel sentences.")
@click.option("--max-sentences", type=POSITIVE, default=100, show_default=True,
              help="Parallel sentences per language.")
@click.option("--batch-size", type=POSITIVE, default=8, show_default=True,
              help="Sentences per forward pass.")
@click.option("--title", help=_TITLE)
@_out_option
def alignment(model, corpus, target, pivots, adapter, split, max_sentences, batch_size, title,
              out, data_format):
    """Cosine of mean-pooled hidden states of parallel sentences, per layer, before/after."""
    from lape_hub.models import load_model
    from lape_hub.plots.alignment import PAPER_PIVOTS, corpus_alignment, plot_alignment

    out = _check_out(out)
    ps = split_langs(pivots) or list(PAPER_PIVOTS)
    mdl, tok = load_model(model)
    kw = dict(split=split, max_sentences=max_sentences, batch_size=batch_size)
    a = corpus_alignment(mdl, tok, corpus, target, ps, stage="base", **kw)
    if adapter:
        from lape_hub.sparse_adapter import apply_adapter

        tuned = apply_adapter(mdl, adapter, model_name=model, merge=True)
        a = a.combine(corpus_alignment(tuned, tok, corpus, target, ps, stage="adapted", **kw))
    _wrote(plot_alignment(a, out, title=title, data_format=data_format))
    avg = a.averaged()
    for s, stage in enumerate(a.stages):
        click.echo(f"{stage}: " + "  ".join(f"{p} {v:.3f}" for p, v in zip(a.pivots, avg[s])))
