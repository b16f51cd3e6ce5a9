"""--lang resolution: every tag form a user may type, the script each one asks for, and the
refusals (a script FLORES-200 lacks is named, never guessed)."""
from __future__ import annotations

import pytest

from lape_hub.errors import LanguageScriptError, UnknownLanguageError
from lape_hub.languages import all_languages, resolve_language

# (what a user types, the FLORES-200 code it must give)
FORMS = [
    # documented in the README: every form of Nepali
    ("ne", "npi_Deva"), ("npi", "npi_Deva"), ("npi_Deva", "npi_Deva"), ("Nepali", "npi_Deva"),
    ("nep", "npi_Deva"),
    # ISO 639-1 / 639-3, case variants
    ("mt", "mlt_Latn"), ("MT", "mlt_Latn"), ("mlt", "mlt_Latn"), ("EN", "eng_Latn"),
    ("cy", "cym_Latn"), ("eng", "eng_Latn"), ("ja", "jpn_Jpan"), ("ko", "kor_Hang"),
    # FLORES-200 codes: any case, either separator
    ("NPI_DEVA", "npi_Deva"), ("zho-hant", "zho_Hant"), ("kas_Deva", "kas_Deva"),
    ("pes_arab", "pes_Arab"), ("arb_Latn", "arb_Latn"),
    # BCP-47 with a region, underscores as in POSIX locales
    ("mt_MT", "mlt_Latn"), ("mt-MT", "mlt_Latn"), ("en-US", "eng_Latn"), ("en_GB", "eng_Latn"),
    ("pt-BR", "por_Latn"), ("es-419", "spa_Latn"), ("ko-KR", "kor_Hang"), ("ja-JP", "jpn_Jpan"),
    # the region implies the script (CLDR likely subtags via maximize())
    ("zh-TW", "zho_Hant"), ("zh_TW", "zho_Hant"), ("zh-HK", "zho_Hant"), ("zh-CN", "zho_Hans"),
    ("az-IR", "azb_Arab"), ("fa-AF", "prs_Arab"), ("fa-IR", "pes_Arab"),
    # explicit script (and region)
    ("zh-Hant", "zho_Hant"), ("zh-Hans", "zho_Hans"), ("ZH_hant_TW", "zho_Hant"),
    ("sr-Cyrl", "srp_Cyrl"), ("sr-Cyrl-RS", "srp_Cyrl"), ("az-Arab", "azb_Arab"),
    ("ks-Deva", "kas_Deva"), ("ar-Latn", "arb_Latn"), ("ko-Kore", "kor_Hang"),
    # macrolanguages: [defaults] in registry/languages.toml, then CLDR's likely script
    ("ar", "arb_Arab"), ("ara", "arb_Arab"), ("ar-EG", "arb_Arab"), ("zh", "zho_Hans"),
    ("cmn", "zho_Hans"), ("cmn-TW", "zho_Hant"), ("fa", "pes_Arab"), ("ms", "zsm_Latn"),
    ("msa", "zsm_Latn"), ("et", "est_Latn"), ("ekk", "est_Latn"), ("lv", "lvs_Latn"),
    ("lv-LV", "lvs_Latn"), ("ltg", "ltg_Latn"), ("no", "nob_Latn"), ("az", "azj_Latn"),
    ("pa", "pan_Guru"), ("ku", "kmr_Latn"), ("ks", "kas_Arab"), ("sr", "srp_Cyrl"),
    # deprecated and alias codes langcodes normalizes
    ("iw", "heb_Hebr"), ("in", "ind_Latn"), ("tl", "tgl_Latn"), ("fil", "tgl_Latn"),
    ("zh-yue", "yue_Hant"), ("yue", "yue_Hant"),
    # English names (the registry's, and those langcodes knows), case-insensitive
    ("LATVIAN", "lvs_Latn"), ("Welsh", "cym_Latn"), ("Chinese", "zho_Hans"),
    ("Traditional Chinese", "zho_Hant"), ("Dari", "prs_Arab"), ("Persian", "pes_Arab"),
    ("Egyptian Arabic", "arz_Arab"), ("Ta'izzi-Adeni Arabic", "acq_Arab"), ("maltese", "mlt_Latn"),
    ("  Serbian ", "srp_Cyrl"),
]


@pytest.mark.parametrize("form,code", FORMS)
def test_tag_forms(form, code):
    assert resolve_language(form).code == code


def test_table_is_large_and_varied():
    assert len(FORMS) >= 30
    assert len({code for _form, code in FORMS}) >= 25


# (tag, the script it asks for, a code the message must name)
WRONG_SCRIPTS = [
    ("sr-Latn", "Latin", "srp_Cyrl"),       # FLORES-200 has Serbian in Cyrillic only
    ("sr-Latn", "Latin", "hrv_Latn"),       # ... and the closest Latin-script languages
    ("sh", "Latin", "srp_Cyrl"),            # Serbo-Croatian normalizes to sr-Latn
    ("sr-ME", "Latin", "srp_Cyrl"),         # Montenegro implies Latin
    ("uz-Cyrl", "Cyrillic", "uzn_Latn"),
    ("uz-AF", "Arabic", "uzn_Latn"),        # Afghanistan implies Arabic script
    ("mn-Mong", "Mongolian", "khk_Cyrl"),
    ("hin_Latn", "Latin", "hin_Deva"),
    ("npi-Latn", "Latin", "npi_Deva"),
    ("zh-Latn", "Latin", "zho_Hans"),
    ("pa-PK", "Arabic", "pan_Guru"),        # Shahmukhi Punjabi is not in FLORES-200
    ("ms-Arab", "Arabic", "zsm_Latn"),      # Jawi: Malay itself lacks it, relatives have it
    ("bs-Cyrl", "Cyrillic", "bos_Latn"),
    ("min_Xyzw", "Xyzw", "min_Latn"),
]


@pytest.mark.parametrize("tag,script,named", WRONG_SCRIPTS)
def test_wrong_script_is_refused_with_closest_matches(tag, script, named):
    with pytest.raises(LanguageScriptError) as e:
        resolve_language(tag)
    msg = str(e.value)
    assert f"{script} script" in msg and named in msg and "\n" not in msg
    assert isinstance(e.value, UnknownLanguageError)  # callers catching the old error still do


@pytest.mark.parametrize("text", ["", "   ", "qqq", "x-foo", "und", "a\nb", "../../etc/passwd",
                                  "Klingon", "zz-ZZ", "en\x00"])
def test_unknown_is_refused_in_one_line(text):
    with pytest.raises(UnknownLanguageError) as e:
        resolve_language(text)
    assert "\n" not in str(e.value)


def test_typos_name_the_closest():
    assert resolve_language("Nepalli").code == "npi_Deva"
    with pytest.raises(UnknownLanguageError) as e:
        resolve_language("Germn")
    assert "deu_Latn (German)" in str(e.value)


def test_every_flores_code_and_iso_tag_resolves_to_itself():
    """The catalog's own codes round-trip, and ``ISO3-Script`` (BCP-47 spelling) too."""
    for lang in all_languages():
        assert resolve_language(lang.code).code == lang.code
        assert resolve_language(lang.code.upper()).code == lang.code
        assert resolve_language(f"{lang.iso639_3}-{lang.script}").code == lang.code


def test_a_script_is_never_changed():
    """Whatever resolves, with a script given, keeps that script (no silent substitution)."""
    for lang in all_languages():
        for base in filter(None, {lang.iso639_1, lang.iso639_3}):
            tag = f"{base}-{lang.script}"
            try:
                got = resolve_language(tag)
            except UnknownLanguageError:
                continue
            assert got.script == lang.script, (tag, got.code)
