"""Languages: FLORES-200 codes with ISO 639 codes, script, English name and family.

Every form a user may type resolves to the FLORES-200 code the catalog stores: a FLORES-200
code, ISO 639-1 or 639-3, a BCP-47 tag (``-`` or ``_``, any case, with script and/or region)
or an English name. A tag's script, given (``sr-Latn``) or implied by its region (``zh-TW``
is Traditional Chinese), must be one FLORES-200 has for that language: a mismatch is refused
with the closest matches, never guessed.

    >>> from lape_hub.languages import resolve_language
    >>> [resolve_language(x).code for x in ["ne", "npi", "npi_Deva", "Nepali", "LATVIAN"]]
    ['npi_Deva', 'npi_Deva', 'npi_Deva', 'npi_Deva', 'lvs_Latn']
    >>> [resolve_language(x).code for x in ["zh-TW", "mt_MT", "az-IR", "fa-AF"]]
    ['zho_Hant', 'mlt_Latn', 'azb_Arab', 'prs_Arab']
    >>> resolve_language("sr-Latn")
    Traceback (most recent call last):
    ...
    lape_hub.errors.LanguageScriptError: language 'sr-Latn' asks for Latin script, which FLORES-200 lacks for it; did you mean: srp_Cyrl (Serbian), bos_Latn (Bosnian), hrv_Latn (Croatian)?
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache

from lape_hub.errors import LanguageScriptError, RegistryError, UnknownLanguageError
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
    keys: dict[str, list[str]]  # lower-cased alias (codes, names) -> FLORES codes
    by_iso: dict[str, list[str]]  # ISO 639-1 or 639-3 code -> FLORES codes
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
    by_iso: dict[str, list[str]] = {}
    for lang in by_code.values():
        for k in {lang.code, lang.iso639_3, lang.iso639_1, lang.name,
                  f"{lang.iso639_3}-{lang.script}"}:
            if k:
                keys.setdefault(k.lower(), []).append(lang.code)
        for k in {lang.iso639_3, lang.iso639_1}:
            if k:
                by_iso.setdefault(k.lower(), []).append(lang.code)
    defaults = {k.lower(): v for k, v in data.get("defaults", {}).items()}
    for k, v in defaults.items():
        if v not in by_code:
            raise RegistryError(f"{path}: default {k!r} -> {v!r} is not a listed language")
    return _Index(by_code, keys, by_iso, defaults)


def all_languages() -> list[Language]:
    """Every registered language, sorted by FLORES-200 code."""
    return sorted(_index().by_code.values(), key=lambda lang: lang.code)


def resolve_language(name: str) -> Language:
    """Resolve a FLORES-200 code, ISO 639-3, ISO 639-1, BCP-47 tag or English name.

    Order: an exact FLORES-200 code (any case, ``-`` or ``_``); an exact ISO code or English
    name of the registry (``[defaults]`` in registry/languages.toml settles macrolanguages:
    ``ar`` is ``arb_Arab``); else the tag is parsed and maximized by langcodes (CLDR likely
    subtags) and the script decides among the language's FLORES-200 varieties.

    Raises LanguageScriptError when the tag's script (given or implied by its region) is not
    one FLORES-200 has for the language, and UnknownLanguageError (with the closest matches)
    when nothing fits.
    """
    idx = _index()
    text = name.strip() if isinstance(name, str) else ""
    if not text or not text.isprintable():
        return _raise_unknown(name)
    low = text.lower()
    for code in idx.by_code:  # npi_Deva, NPI-DEVA, zho_hant
        if code.lower() == low.replace("-", "_"):
            return idx.by_code[code]
    if low in idx.defaults:
        return idx.by_code[idx.defaults[low]]
    hits = sorted(set(idx.keys.get(low, [])))
    if len(hits) == 1:
        return idx.by_code[hits[0]]
    iso3 = {idx.by_code[h].iso639_3 for h in hits}
    if len(iso3) == 1 and next(iter(iso3)) in idx.defaults:  # one language, several scripts
        return idx.by_code[idx.defaults[next(iter(iso3))]]
    found = _via_langcodes(text)
    if found is not None:
        return found
    if hits:
        raise UnknownLanguageError(name, [str(idx.by_code[h]) for h in hits])
    return _raise_unknown(name)


def _readings(text: str):
    """langcodes' readings of ``text``, as (as typed, normalized): the BCP-47 tag, then the
    English name (``Nepali``, ``Dari``, ``Traditional Chinese``, typos included)."""
    import langcodes

    tag = text.replace("_", "-")
    try:
        yield (langcodes.Language.get(tag, normalize=False),
               langcodes.Language.get(tag, normalize=True))
    except (ValueError, LookupError):
        pass
    try:
        found = langcodes.find(text)
    except (ValueError, LookupError):
        return
    yield found, found


@lru_cache(maxsize=1)
def _by_subtag() -> dict[str, list[str]]:
    """Language subtag -> FLORES-200 codes: ISO 639-1/3 codes as registered and as langcodes
    normalizes them (tl -> fil, nb), and every ``[defaults]`` key (``cmn``, ``no``) for all
    varieties of its default's language."""
    import langcodes

    idx = _index()
    out: dict[str, set[str]] = {k: set(v) for k, v in idx.by_iso.items()}
    for lang in idx.by_code.values():
        for k in (lang.iso639_1, lang.iso639_3):
            if not k:
                continue
            try:
                norm = langcodes.Language.get(k, normalize=True).language
            except (ValueError, LookupError):
                continue
            if norm:
                out.setdefault(norm.lower(), set()).add(lang.code)
    for key, code in idx.defaults.items():
        iso3 = idx.by_code[code].iso639_3
        out.setdefault(key, set()).update(c for c, lg in idx.by_code.items() if lg.iso639_3 == iso3)
    return {k: sorted(v) for k, v in out.items()}


def _via_langcodes(text: str) -> Language | None:
    """Resolve a tag through langcodes' parse and ``maximize()`` (None: no language fits)."""
    try:
        import langcodes
    except ImportError:  # pragma: no cover - langcodes is a dependency
        return None
    table = _by_subtag()
    for raw, norm in _readings(text):
        # the normalized language first (zh-yue is yue, not zh), then the subtag as typed
        for lang in (norm.language, raw.language):
            if not lang:
                continue
            bases = [lang.lower()]
            try:
                bases.append(langcodes.Language.get(lang).to_alpha3().lower())
            except (ValueError, LookupError):
                pass
            cands = sorted({c for b in bases for c in table.get(b, [])})
            if cands:
                return _pick(text, norm, bases, cands)
    return None


def _pick(text: str, norm, bases: list[str], cands: list[str]) -> Language:
    """One of a language's FLORES-200 varieties ``cands`` for the parsed tag ``norm``."""
    idx = _index()
    asked, likely = _scripts(norm)
    default = next((idx.defaults[b] for b in bases if b in idx.defaults), None)
    pool = [c for c in cands if idx.by_code[c].script == likely]
    if asked and not pool:
        raise LanguageScriptError(text, _script_name(asked), _nearest(norm, cands, asked, default))
    pool = pool or cands
    if len(pool) == 1:
        return idx.by_code[pool[0]]
    if norm.territory:  # fa-AF is Dari (prs): the variety whose own tag names that region
        local = [c for c in pool if _territory(idx.by_code[c].iso639_3) == norm.territory]
        if len(local) == 1:
            return idx.by_code[local[0]]
    if default in pool:
        return idx.by_code[default]
    isos = {idx.by_code[c].iso639_3 for c in pool}
    if len(isos) == 1 and next(iter(isos)) in idx.defaults:
        return idx.by_code[idx.defaults[next(iter(isos))]]
    if asked and default:  # ms-Arab: Malay itself lacks the script, only its relatives have it
        raise LanguageScriptError(text, _script_name(asked), _nearest(norm, cands, asked, default))
    raise UnknownLanguageError(text, [str(idx.by_code[c]) for c in pool])


def _nearest(norm, cands: list[str], script: str, default: str | None) -> list[str]:
    """Up to four suggestions: the language's own varieties (its default first), then close
    languages written in ``script`` (CLDR's language-matching distance: sr-Latn -> hrv_Latn)."""
    import langcodes

    idx = _index()
    main = idx.by_code[default].iso639_3 if default else None
    own = sorted(cands, key=lambda c: (idx.by_code[c].iso639_3 != main,
                                       idx.by_code[c].script != script, c))
    asked = norm.to_tag()
    near = []
    for lang in idx.by_code.values():
        if lang.script != script or lang.code in cands:
            continue
        try:
            d = langcodes.tag_distance(asked, f"{lang.iso639_3}-{lang.script}")
        except (ValueError, LookupError):
            continue
        if d <= 20:
            near.append((d, lang.code))
    return [str(idx.by_code[c]) for c in own + [c for _d, c in sorted(near)]][:4]


_SCRIPT_ALIASES = {"Kore": "Hang", "Hrkt": "Jpan", "Hira": "Jpan", "Kana": "Jpan"}


def _scripts(norm) -> tuple[str | None, str | None]:
    """(the script a tag asks for, the script it most likely means) as FLORES-200 spells
    them. Asked: given (sr-Latn), or implied by the region where CLDR's likely subtags know
    the language there (zh-TW -> Hant, sr-ME -> Latn). Likely: that, else CLDR's script for
    the bare language or for the region alone (a preference among varieties, not a demand)."""
    from langcodes.data_dicts import LIKELY_SUBTAGS

    lang, region = norm.language, norm.territory
    known = bool(lang) and (lang in LIKELY_SUBTAGS or f"{lang}-{region}" in LIKELY_SUBTAGS)
    full = norm.maximize().script
    asked = norm.script or (full if region and known else None)
    likely = asked or (full if known or (region and f"und-{region}" in LIKELY_SUBTAGS) else None)
    return (_SCRIPT_ALIASES.get(asked, asked) if asked else None,
            _SCRIPT_ALIASES.get(likely, likely) if likely else None)


@lru_cache(maxsize=None)
def _territory(iso3: str) -> str | None:
    import langcodes

    try:
        return langcodes.Language.get(iso3, normalize=True).territory
    except (ValueError, LookupError):
        return None


def _script_name(script: str) -> str:
    import langcodes

    try:
        label = langcodes.Language.get(f"und-{script}").script_name()
    except (ValueError, LookupError):
        return script
    return label if label and not label.startswith("Unknown") else script


def _raise_unknown(name: str) -> Language:
    idx = _index()
    text = str(name)
    pool = {k: v for k, v in idx.keys.items() if len(k) > 3}
    close = difflib.get_close_matches(text.lower(), list(pool), n=4, cutoff=0.6)
    sugg = []
    for c in close:
        for code in pool[c]:
            label = str(idx.by_code[code])
            if label not in sugg:
                sugg.append(label)
    prefix = text.replace("-", "_").split("_")[0].lower()
    for code in idx.keys.get(prefix, []):
        label = str(idx.by_code[code])
        if label not in sugg:
            sugg.insert(0, label)
    raise UnknownLanguageError(text, sugg[:4])
