"""Typed errors of lape-hub. The CLI maps every one of them to one line and exit code 2.

Example::

    >>> from lape_hub.errors import UnknownModelError
    >>> str(UnknownModelError("lama-3", ["llama-3.1-8b"]))
    "unknown model 'lama-3'; did you mean: llama-3.1-8b?"
"""
from __future__ import annotations


class LapeHubError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = 2


class UnknownNameError(LapeHubError):
    kind = "name"

    def __init__(self, name: str, suggestions: list[str] | None = None):
        self.name = name
        self.suggestions = list(suggestions or [])
        msg = f"unknown {self.kind} {name!r}"
        if self.suggestions:
            msg += "; did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(msg)


class UnknownModelError(UnknownNameError):
    kind = "model"


class UnknownLanguageError(UnknownNameError):
    kind = "language"


class UnknownRefsetError(UnknownNameError):
    kind = "reference set"


class LanguageScriptError(UnknownLanguageError):
    """A tag asks for a script (``sr-Latn``) that FLORES-200 lacks for that language."""

    def __init__(self, name: str, script: str, suggestions: list[str]):
        self.name, self.script, self.suggestions = name, script, list(suggestions)
        LapeHubError.__init__(
            self, f"language {name!r} asks for {script} script, which FLORES-200 lacks for it;"
                  f" did you mean: {', '.join(self.suggestions)}?")


class RegistryError(LapeHubError):
    """A registry TOML file is malformed."""


class SchemaError(LapeHubError):
    """A table does not match its schema (on write), or a Parquet file is corrupt (on read)."""


class NotInCatalogError(LapeHubError):
    """The requested entry is not in the catalog; the message says how to build it."""


class CatalogNotFoundError(NotInCatalogError):
    """The catalog folder (``--catalog`` / ``LAPE_HUB_CATALOG``) does not exist."""


class CatalogBusyError(LapeHubError):
    """Another writer holds the catalog's lock for too long."""


class QueryRefusedError(LapeHubError):
    """User SQL tried to write, attach, load or reach outside the catalog."""


class QueryError(LapeHubError):
    """User SQL failed while it ran or its result was written: a runtime error, a time or
    memory limit, a column the output format cannot hold, an unwritable output."""


class NeuronSetFormatError(LapeHubError):
    """An imported neuron-set file does not fit its model."""


class CorpusError(LapeHubError):
    """A corpus is missing a language or has too little text."""


class ArchitectureError(LapeHubError):
    """A model has no GLU feed-forward block that lape-hub understands."""


class AdapterMismatchError(LapeHubError):
    """An adapter was made for another model, revision or neuron set."""


class HubError(LapeHubError):
    """A Hugging Face Hub operation failed (auth, missing repo, conflict)."""


class OutputPathError(LapeHubError):
    """An output path can't be used: inside the catalog or the cache, a folder where a file
    is expected, a missing or unwritable parent, or a suffix that contradicts ``--format``."""


class MissingExtraError(LapeHubError):
    """A command needs an optional dependency (e.g. torch) that is not installed."""


def require(module: str, extra: str = "build", *, purpose: str | None = None):
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install.

    Example::

        >>> require("json").__name__
        'json'
        >>> require("no_such_module_x", "build", purpose="reading .pt files")
        Traceback (most recent call last):
        ...
        lape_hub.errors.MissingExtraError: reading .pt files needs no_such_module_x, which is not installed: pip install 'lape-hub[build]'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        what = purpose or "this command"
        raise MissingExtraError(f"{what} needs {module}, which is not installed: "
                                f"pip install 'lape-hub[{extra}]'") from None


class CatalogConflictError(LapeHubError):
    """A write would change an existing catalog entry and the caller did not ask to replace it."""
