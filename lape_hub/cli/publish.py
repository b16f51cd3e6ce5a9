"""``lape-hub publish``: the catalog and adapters to the Hugging Face Hub (thin: parse, call
:mod:`lape_hub.publisher`, print the plan and the outcome).

\b
Examples:
  lape-hub publish catalog --hub-repo my-org/lape-hub-catalog
  lape-hub publish catalog --dry-run /tmp/stage           # stage the repo tree, push nothing
  lape-hub publish adapter adapters/gemma-3-270m/npi_Deva --hub-repo my-org/gemma-npi-lape
  lape-hub publish --missing --adapters adapters/         # CI: only what the remote lacks

The token comes from HF_TOKEN or `hf auth login` and is never printed. Only files lape-hub
builds are sent: a folder holding a symlink, device, pipe or any other file is refused.
"""
from __future__ import annotations

import click

from lape_hub.cli._common import catalog_option

hub_repo_option = click.option(
    "--hub-repo", default=None, metavar="ORG/NAME",
    help="The catalog's dataset repo (default: $LAPE_HUB_REPO, else [hub] repo in "
         "~/.config/lape-hub/config.toml).")
dry_run_option = click.option(
    "--dry-run", "dry_run", type=click.Path(file_okay=False), default=None, metavar="DIR",
    help="Stage the repo tree in DIR and print what would change; push nothing. DIR is "
         "created (with missing parent folders) when absent; a folder staged before is "
         "replaced; a non-empty folder lape-hub did not stage, a file, or a folder inside "
         "the catalog or the cache is refused.")
private_option = click.option(
    "--private/--public", default=None,
    help="Visibility of a repo this creates (default: [hub] private in the config, else public).")
verbose_option = click.option("-v", "--verbose", is_flag=True,
                              help="List unchanged and kept files too.")


def _first(*values):
    """The first value that is not None (for flags that may be set before the subcommand)."""
    return next((v for v in values if v is not None), None)


def _report(result, verbose: bool) -> None:
    for line in result.plan.report_lines(verbose=verbose):
        click.echo(line)
    click.echo(result.summary())


@click.group(invoke_without_command=True)
@click.option("--missing", is_flag=True,
              help="Publish only what the remote lacks: the catalog's new entries and every "
                   "adapter under --adapters whose repo lacks it (what CI runs).")
@hub_repo_option
@catalog_option
@click.option("--adapters", "adapters_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="With --missing: publish every adapter folder under DIR.")
@click.option("--namespace", default=None, metavar="ORG",
              help="With --missing: where adapter repos go (default: [hub] adapter_namespace, "
                   "else the catalog repo's namespace).")
@dry_run_option
@private_option
@verbose_option
@click.pass_context
def publish(ctx, missing, hub_repo, catalog_dir, adapters_dir, namespace, dry_run, private,
            verbose):
    """Publish the catalog and adapters to the Hugging Face Hub.

    \b
    Subcommands:
      catalog          the catalog as a dataset repo (Parquet, schemas, dataset card)
      adapter PATH     an adapter as a model repo (weights, config, model card)
    Or `lape-hub publish --missing` for what the remote lacks (catalog and adapters).
    """
    if ctx.invoked_subcommand is not None:
        if adapters_dir:
            raise click.UsageError("--adapters goes with `publish --missing`, not a subcommand")
        # options given before the subcommand are its defaults (--hub-repo: the catalog repo)
        ctx.obj = {"missing": missing, "hub_repo": hub_repo, "catalog_dir": catalog_dir,
                   "namespace": namespace, "dry_run": dry_run, "private": private,
                   "verbose": verbose}
        return
    if not missing:
        raise click.UsageError("say what to publish: `publish catalog`, `publish adapter PATH` "
                               "or `publish --missing`")
    from lape_hub.publisher import publish_missing

    for result in publish_missing(catalog_dir, hub_repo, adapters=adapters_dir,
                                  namespace=namespace, dry_run=dry_run, private=private):
        _report(result, verbose)


@publish.command("catalog")
@hub_repo_option
@catalog_option
@dry_run_option
@click.option("--missing", is_flag=True,
              help="Only entries the remote lacks (new files, or files adding languages).")
@click.option("--prune", is_flag=True,
              help="Delete remote catalog files the local catalog lacks (default: keep them).")
@click.option("--force", is_flag=True,
              help="Publish even where the remote copy has languages the local one lacks.")
@click.option("-m", "--message", default=None, help="Commit message (default: generated).")
@click.option("--license", "license_", default="apache-2.0", show_default=True,
              help="License id in the dataset card.")
@private_option
@verbose_option
@click.pass_context
def catalog(ctx, hub_repo, catalog_dir, dry_run, missing, prune, force, message, license_,
            private, verbose):
    """Publish the catalog as a dataset repo, in one commit with only what changed."""
    from lape_hub.publisher import publish_catalog

    g = ctx.obj or {}
    result = publish_catalog(catalog_dir or g.get("catalog_dir"), hub_repo or g.get("hub_repo"),
                             dry_run=dry_run or g.get("dry_run"),
                             missing_only=missing or bool(g.get("missing")), prune=prune,
                             force=force, private=_first(private, g.get("private")),
                             message=message, license=license_)
    _report(result, verbose or bool(g.get("verbose")))


@publish.command("adapter")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--hub-repo", default=None, metavar="ORG/NAME",
              help="The adapter's model repo (default: NAMESPACE/<model>-<lang>-<method>).")
@click.option("--namespace", default=None, metavar="ORG",
              help="Namespace for the default repo name (default: [hub] adapter_namespace, "
                   "else the catalog repo's namespace).")
@catalog_option
@click.option("--catalog-repo", default=None, metavar="ORG/NAME",
              help="Catalog repo the card links to (default: the configured hub repo).")
@click.option("--merged", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also publish the merged model in DIR under merged/ (merged into DIR first, "
                   "as `lape-hub merge` does, when DIR does not exist).")
@dry_run_option
@click.option("--missing", is_flag=True,
              help="Leave the repo alone when it already holds this adapter's weights.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Delete remote files the adapter folder no longer has.")
@click.option("-m", "--message", default=None, help="Commit message (default: generated).")
@click.option("--license", "license_", default=None,
              help="License id in the model card (default: the base model's).")
@private_option
@verbose_option
@click.pass_context
def adapter(ctx, path, hub_repo, namespace, catalog_dir, catalog_repo, merged, dry_run, missing,
            prune, message, license_, private, verbose):
    """Publish an adapter folder as a model repo with a model card."""
    from lape_hub.publisher import publish_adapter

    g = ctx.obj or {}
    result = publish_adapter(path, hub_repo, namespace=namespace or g.get("namespace"),
                             catalog=catalog_dir or g.get("catalog_dir"),
                             catalog_repo=catalog_repo or g.get("hub_repo"), merged=merged,
                             dry_run=dry_run or g.get("dry_run"),
                             missing_only=missing or bool(g.get("missing")), prune=prune,
                             private=_first(private, g.get("private")), message=message,
                             license=license_)
    _report(result, verbose or bool(g.get("verbose")))
