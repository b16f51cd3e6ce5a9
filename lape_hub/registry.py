"""The registry: models and reference sets lape-hub knows (``registry/*.toml``).

Example::

    >>> from lape_hub.registry import resolve_model, resolve_refset
    >>> m = resolve_model("Llama-3.1-8B")          # alias, any case
    >>> m.alias, m.d_ffn, resolve_model("meta-llama/Llama-3.1-8B").alias
    ('llama-3.1-8b', 14336, 'llama-3.1-8b')
    >>> resolve_refset("paper-12").langs[:3]
    ('mlt_Latn', 'afr_Latn', 'isl_Latn')
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache

from lape_hub.errors import RegistryError, UnknownModelError, UnknownRefsetError
from lape_hub.languages import all_languages, resolve_language
from lape_hub.paths import registry_dir
from lape_hub.toml import load_toml

_INT_FIELDS = ("n_layers", "d_model", "d_ffn", "total_params")
_STR_FIELDS = ("repo_id", "revision", "family", "activation")


@dataclass(frozen=True)
class ModelSpec:
    alias: str
    repo_id: str
    revision: str
    family: str
    n_layers: int
    d_model: int
    d_ffn: int
    total_params: int
    activation: str
    gguf_package: str | None = None
    gguf_file: str | None = None
    offline_revision: str | None = None

    @property
    def n_neurons(self) -> int:
        """FFN neurons of the whole model (layers x d_ffn)."""
        return self.n_layers * self.d_ffn

    @property
    def params_per_neuron(self) -> int:
        """A gate row, an up row and a down column: 3 x d_model."""
        return 3 * self.d_model


@dataclass(frozen=True)
class RefSet:
    name: str
    langs: tuple[str, ...]  # FLORES-200 codes, in the registry's order
    description: str = ""


@lru_cache(maxsize=1)
def models() -> dict[str, ModelSpec]:
    """All registered models by alias (lower case)."""
    path = registry_dir() / "models.toml"
    out: dict[str, ModelSpec] = {}
    for alias, row in load_toml(path).get("models", {}).items():
        missing = [f for f in _INT_FIELDS + _STR_FIELDS if f not in row]
        if missing:
            raise RegistryError(f"{path}: model {alias!r} lacks {', '.join(missing)}")
        for f in _INT_FIELDS:
            if not isinstance(row[f], int) or row[f] <= 0:
                raise RegistryError(f"{path}: model {alias!r}: {f} must be a positive integer")
        for f in _STR_FIELDS:
            if not isinstance(row[f], str) or not row[f]:
                raise RegistryError(f"{path}: model {alias!r}: {f} must be a non-empty string")
        unknown = set(row) - set(_INT_FIELDS + _STR_FIELDS) - {"gguf_package", "gguf_file",
                                                                "offline_revision"}
        if unknown:
            raise RegistryError(f"{path}: model {alias!r} has unknown fields {sorted(unknown)}")
        out[alias.lower()] = ModelSpec(alias=alias.lower(), **row)
    return out


def resolve_model(name: str) -> ModelSpec:
    """A registry alias (case-insensitive) or a Hugging Face repo id."""
    table = models()
    key = name.strip().lower()
    if key in table:
        return table[key]
    for spec in table.values():
        if spec.repo_id.lower() == key:
            return spec
    pool = list(table) + [s.repo_id for s in table.values()]
    close = difflib.get_close_matches(name.strip(), pool, n=3, cutoff=0.5)
    close += difflib.get_close_matches(key, pool, n=3, cutoff=0.5)
    raise UnknownModelError(name, list(dict.fromkeys(close)) or sorted(table))


@lru_cache(maxsize=1)
def refsets() -> dict[str, RefSet]:
    path = registry_dir() / "refsets.toml"
    out: dict[str, RefSet] = {}
    for name, row in load_toml(path).get("refsets", {}).items():
        langs = row.get("langs")
        if langs == "all":
            codes = tuple(lang.code for lang in all_languages())
        elif isinstance(langs, list) and langs:
            codes = tuple(resolve_language(x).code for x in langs)
            if len(set(codes)) != len(codes):
                raise RegistryError(f"{path}: refset {name!r} lists a language twice")
        else:
            raise RegistryError(f"{path}: refset {name!r} needs langs = [...] or \"all\"")
        out[name.lower()] = RefSet(name.lower(), codes, row.get("description", ""))
    return out


def resolve_refset(name: str) -> RefSet:
    table = refsets()
    key = name.strip().lower()
    if key in table:
        return table[key]
    raise UnknownRefsetError(name, difflib.get_close_matches(key, list(table), n=3, cutoff=0.4)
                             or sorted(table))
