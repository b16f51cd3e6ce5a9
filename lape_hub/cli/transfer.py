"""import / export of neuron sets (the torch list format needs torch)."""
from __future__ import annotations

import click

from lape_hub.cli._common import LANGS_SYNTAX, catalog_option, langs_callback, open_catalog, split_langs


@click.command("import")
@click.argument("path", type=click.Path())
@click.option("--model", required=True, help="Registry alias of the model the sets belong to.")
@click.option("--langs", multiple=True, required=True, callback=langs_callback,
              help="The file's language order, e.g. --langs 'mt af is cy mk lv lt sl sk et ka "
                   f"ne'; {LANGS_SYNTAX}.")
@click.option("--refset", required=True, help="Reference set the sets were selected over.")
@click.option("--selection", default="top0.05-f0.95-b0.95", show_default=True,
              help="Selection parameters the publisher used.")
@click.option("--format", "fmt", type=click.Choice(["pt", "json", "parquet"]), default=None,
              help="File format (default: from the suffix: .pt/.pth, .json, .parquet).")
@click.option("--replace", is_flag=True,
              help="Replace languages the catalog already holds with other neurons "
                   "(without it such an import is refused; an identical one changes nothing).")
@catalog_option
def import_(path, model, langs, refset, selection, fmt, replace, catalog_dir):
    """Import a neuron-set file (torch List[List[LongTensor]], or lape-hub JSON/Parquet)
    into the catalog. Every format is validated against the registry's model and
    reference set first; torch files are loaded with weights_only=True."""
    from lape_hub.formats import import_neuron_sets

    res = import_neuron_sets(open_catalog(catalog_dir, create=True), path, model=model,
                             langs=split_langs(langs), refset=refset, selection=selection,
                             fmt=fmt, replace=replace)
    if res.status == "unchanged":
        click.echo(f"already in the catalog: {res.entry} · "
                   f"{', '.join(s.lang for s in res.sets)} (unchanged)")
        return
    for ns in res.sets:
        share = f"{100 * ns.share:.2f} %" if ns.share else "n/a"
        click.echo(f"{ns.model} · {ns.lang}: {ns.n_neurons:,} neurons, "
                   f"{ns.trainable_params / 1e6:.1f}M parameters ({share})")
    if res.changed:
        click.echo(f"replaced {', '.join(res.changed)} in {res.entry}")
    click.echo(f"imported {len(res.sets)} neuron sets into refset {res.sets[0].refset}")


@click.command()
@click.option("--model", required=True, help="Registry alias or Hugging Face repo id.")
@click.option("--refset", default=None,
              help="Reference set (default: the first the catalog holds for the model).")
@click.option("--langs", multiple=True, callback=langs_callback,
              help=f"Languages, in file order (default: all of the refset's sets); {LANGS_SYNTAX}.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "json", "pt"]), default=None,
              help="Output format (default: from -o's suffix; a suffix that disagrees is refused).")
@click.option("-o", "--output", required=True,
              help="File to write (.parquet, .json or .pt); its folder must exist, and it may "
                   "not lie inside the catalog or the cache.")
@catalog_option
def export(model, refset, langs, fmt, output, catalog_dir):
    """Export neuron sets (one file, languages in the given order)."""
    from lape_hub.errors import NotInCatalogError, require
    from lape_hub.formats import write_neuron_sets
    from lape_hub.output_paths import NEURON_SET_SUFFIXES, check_output_file

    output, fmt = check_output_file(output, formats=NEURON_SET_SUFFIXES, fmt=fmt,
                                    catalog_root=catalog_dir)
    if fmt == "pt":
        require("torch", "build", purpose="writing .pt files")
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


@click.command()
@click.option("--model", required=True, help="Registry alias whose published entries to copy.")
@click.option("--refset", default=None, help="Only this reference set's LAPE and neuron sets "
              "(default: every set; activation counts are always pulled).")
@click.option("--hub-repo", default=None,
              help="Catalog dataset repo ORG/NAME (default: env LAPE_HUB_REPO or the config file).")
@click.option("--revision", default=None, help="Branch, tag or commit to pull (default: main).")
@catalog_option
def pull(model, refset, hub_repo, revision, catalog_dir):
    """Copy a model's published catalog entries that the local catalog lacks (the local
    catalog folder is created if missing). Files that exist locally are never overwritten:
    identical ones are counted, different ones are named as conflicts."""
    from lape_hub.pull import pull as pull_entries

    where = {"refset": refset} if refset else {}
    res = pull_entries(open_catalog(catalog_dir, create=True), model, hub_repo=hub_repo,
                       revision=revision, **where)
    for rel in res.added:
        click.echo(f"added {rel}")
    click.echo(res.summary())
