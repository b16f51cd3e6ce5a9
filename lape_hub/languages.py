"""Languages: FLORES-200 codes with ISO 639 codes, script, English name and family.

Every form a user may type resolves to the FLORES-200 code the catalog stores:

    >>> from lape_hub.languages import resolve_language
    >>> [resolve_language(x).code for x in ["ne", "npi", "npi_Deva", "Nepali", "LATVIAN"]]
    ['npi_Deva', 'npi_Deva', 'npi_Deva', 'npi_Deva', 'lvs_Latn']
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache

from lape_hub.errors import RegistryError, UnknownLanguageError
from lape_hub.paths import registry_dir
from lape_hub.toml import load_toml


@dataclass(frozen=True)
class Language:
    code: str  # FLORES-200, e.g. npi_Deva
    iso639_3: str
    iso639_1: str | None
    script: str
    name: str
    family: str

    def __str__(self) -> str:
        return f"{self.code} ({self.name})"


@dataclass(frozen=True)
class _Index:
    by_code: dict[str, Language]
    keys: dict[str, list[str]]  # lower-cased alias -> FLORES codes
    defaults: dict[str, str]


@lru_cache(maxsize=1)
def _index() -> _Index:
    path = registry_dir() / "languages.toml"
    data = load_toml(path)
    by_code: dict[str, Language] = {}
    for code, row in data.get("languages", {}).items():
        try:
            iso3, script = code.split("_")
            lang = Language(code, row["iso639_3"], row.get("iso639_1"), row["script"],
                            row["name"], row["family"])
        except (KeyError, ValueError) as e:
            raise RegistryError(f"{path}: language {code!r} is malformed ({e})") from None
        if lang.iso639_3 != iso3 or lang.script != script:
            raise RegistryError(f"{path}: language {code!r} disagrees with its iso639_3/script")
        by_code[code] = lang
    keys: dict[str, list[str]] = {}
    for lang in by_code.values():
        for k in {lang.code, lang.iso639_3, lang.iso639_1, lang.name,
                  f"{lang.iso639_3}-{lang.script}"}:
            if k:
                keys.setdefault(k.lower(), []).append(lang.code)
    defaults = {k.lower(): v for k, v in data.get("defaults", {}).items()}
    for k, v in defaults.items():
        if v not in by_code:
            raise RegistryError(f"{path}: default {k!r} -> {v!r} is not a listed language")
    return _Index(by_code, keys, defaults)


def all_languages() -> list[Language]:
    """Every registered language, sorted by FLORES-200 code."""
    return sorted(_index().by_code.values(), key=lambda lang: lang.code)


def resolve_language(name: str) -> Language:
    """Resolve a FLORES-200 code, ISO 639-3, ISO 639-1, BCP-47 tag or English name.

    Raises UnknownLanguageError (with the closest matches) when nothing fits.
    """
    idx = _index()
    key = name.strip().replace("-", "_") if "_" in name or "-" in name else name.strip()
    low = key.lower()
    for cand in (low, low.replace("_", "-")):
        if cand in idx.defaults:
            return idx.by_code[idx.defaults[cand]]
        hits = idx.keys.get(cand)
        if hits and len(set(hits)) == 1:
            return idx.by_code[hits[0]]
        if hits:
            iso3 = {idx.by_code[h].iso639_3 for h in hits}
            if len(iso3) == 1 and next(iter(iso3)) in idx.defaults:
                return idx.by_code[idx.defaults[next(iter(iso3))]]
            raise UnknownLanguageError(name, sorted(set(hits)))
    # exact FLORES code, case-insensitively (npi_deva)
    for code in idx.by_code:
        if code.lower() == low:
            return idx.by_code[code]
    # a BCP-47 tag or name langcodes understands (e.g. "nep", "Latvian language")
    found = _via_langcodes(name)
    if found:
        return found
    return _raise_unknown(name)


def _via_langcodes(name: str) -> Language | None:
    try:
        import langcodes
    except ImportError:  # pragma: no cover - langcodes is a dependency
        return None
    idx = _index()
    try:
        tag = langcodes.standardize_tag(name) if "_" not in name else None
    except (ValueError, LookupError):
        tag = None
    if tag is None:
        try:
            tag = langcodes.find(name).to_tag()
        except (LookupError, ValueError):
            return None
    lang = langcodes.Language.get(tag)
    base = (lang.language or "").lower()
    hits = sorted(set(idx.keys.get(base, [])))
    if lang.script:
        hits = [h for h in hits if idx.by_code[h].script == lang.script] or hits
    if len(hits) == 1:
        return idx.by_code[hits[0]]
    if base in idx.defaults:
        return idx.by_code[idx.defaults[base]]
    return None


def _raise_unknown(name: str) -> Language:
    idx = _index()
    pool = {k: v for k, v in idx.keys.items() if len(k) > 3}
    close = difflib.get_close_matches(name.lower(), list(pool), n=4, cutoff=0.6)
    sugg = []
    for c in close:
        for code in pool[c]:
            lang = idx.by_code[code]
            label = f"{lang.code} ({lang.name})"
            if label not in sugg:
                sugg.append(label)
    prefix = name.replace("-", "_").split("_")[0].lower()
    for code in idx.keys.get(prefix, []):
        label = f"{code} ({idx.by_code[code].name})"
        if label not in sugg:
            sugg.insert(0, label)
    raise UnknownLanguageError(name, sugg[:4])
