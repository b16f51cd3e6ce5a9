"""import / export of neuron sets (the torch list format needs torch)."""
from __future__ import annotations

import click

from lape_hub.cli._common import catalog_option, open_catalog, split_langs


@click.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", required=True, help="Registry alias of the model the sets belong to.")
@click.option("--langs", multiple=True, required=True,
              help="The file's language order, e.g. --langs 'mt af is cy mk lv lt sl sk et ka ne'.")
@click.option("--refset", required=True, help="Reference set the sets were selected over.")
@click.option("--selection", default="top0.05-f0.95-b0.95", show_default=True,
              help="Selection parameters the publisher used.")
@click.option("--format", "fmt", type=click.Choice(["pt", "json", "parquet"]), default=None)
@catalog_option
def import_(path, model, langs, refset, selection, fmt, catalog_dir):
    """Import a published neuron-set file (torch List[List[LongTensor]]) into the catalog."""
    from lape_hub.formats import import_neuron_sets

    sets = import_neuron_sets(open_catalog(catalog_dir), path, model=model,
                              langs=split_langs(langs), refset=refset, selection=selection,
                              fmt=fmt)
    for ns in sets:
        share = f"{100 * ns.share:.2f} %" if ns.share else "n/a"
        click.echo(f"{ns.model} · {ns.lang}: {ns.n_neurons:,} neurons, "
                   f"{ns.trainable_params / 1e6:.1f}M parameters ({share})")
    click.echo(f"imported {len(sets)} neuron sets into refset {sets[0].refset}")


@click.command()
@click.option("--model", required=True)
@click.option("--refset", default=None)
@click.option("--langs", multiple=True, help="Languages (default: all of the refset's sets).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "json", "pt"]), default=None)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@catalog_option
def export(model, refset, langs, fmt, output, catalog_dir):
    """Export neuron sets (one file, languages in the given order)."""
    from lape_hub.errors import NotInCatalogError
    from lape_hub.formats import write_neuron_sets

    cat = open_catalog(catalog_dir)
    codes = split_langs(langs)
    if not codes:
        from lape_hub.registry import resolve_model

        alias = resolve_model(model).alias
        avail = cat.neuron_sets_available(alias)
        want = cat.refset_name(alias, refset) if refset else None
        keys = [k for k in avail if want is None or k[0] == want]
        if not keys:
            raise NotInCatalogError(f"no neuron sets for {model} in {cat.root}")
        refset = keys[0][0]
        codes = avail[keys[0]]
    sets = [cat.neuron_set(model, c, refset=refset) for c in codes]
    write_neuron_sets(sets, output, fmt)
    click.echo(f"wrote {len(sets)} neuron sets ({', '.join(s.lang for s in sets)}) to {output}")
