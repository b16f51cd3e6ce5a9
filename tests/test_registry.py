import pytest

from lape_hub.errors import RegistryError, UnknownLanguageError, UnknownModelError, UnknownRefsetError
from lape_hub.languages import all_languages, resolve_language
from lape_hub.registry import models, resolve_model, resolve_refset

from conftest import shared_data


def test_models_have_the_issue_shapes():
    m = models()
    assert (m["llama-3.1-8b"].n_layers, m["llama-3.1-8b"].d_model, m["llama-3.1-8b"].d_ffn) == (32, 4096, 14336)
    assert (m["mistral-nemo-12b"].n_layers, m["mistral-nemo-12b"].d_model) == (40, 5120)
    assert m["aya-expanse-8b"].repo_id == "CohereForAI/aya-expanse-8b"
    assert (m["gemma-3-270m"].n_layers, m["gemma-3-270m"].d_model, m["gemma-3-270m"].d_ffn) == (18, 640, 2048)


@pytest.mark.parametrize("name", ["llama-3.1-8b", "LLAMA-3.1-8B", "meta-llama/Llama-3.1-8B",
                                  "meta-llama/llama-3.1-8b"])
def test_model_aliases_and_repo_ids(name):
    assert resolve_model(name).alias == "llama-3.1-8b"


def test_unknown_model_names_closest():
    with pytest.raises(UnknownModelError, match="llama-3.1-8b"):
        resolve_model("lama-3.1-8")


@pytest.mark.parametrize("form,code", [
    ("ne", "npi_Deva"), ("npi", "npi_Deva"), ("npi_Deva", "npi_Deva"), ("Nepali", "npi_Deva"),
    ("NPI_DEVA", "npi_Deva"), ("lv", "lvs_Latn"), ("Latvian", "lvs_Latn"), ("mt", "mlt_Latn"),
    ("cy", "cym_Latn"), ("Welsh", "cym_Latn"), ("en", "eng_Latn"), ("zh-Hant", "zho_Hant"),
    ("zh", "zho_Hans"), ("kas_Deva", "kas_Deva"), ("ar", "arb_Arab"),
])
def test_language_forms(form, code):
    assert resolve_language(form).code == code


def test_typos_and_unknown_languages():
    assert resolve_language("Nepalli").code == "npi_Deva"  # langcodes' name matching
    with pytest.raises(UnknownLanguageError, match="unknown language 'qqq'"):
        resolve_language("qqq")
    with pytest.raises(UnknownLanguageError) as e:
        resolve_language("min_Xyzw")
    assert "min_Latn (Minangkabau)" in str(e.value)


def test_languages_cover_sib200():
    folder = shared_data("sib200")
    on_disk = {p.name for p in folder.iterdir() if p.is_dir()}
    assert on_disk == {lang.code for lang in all_languages()}


def test_every_language_is_complete():
    langs = all_languages()
    assert len(langs) >= 204
    for lang in langs:
        assert lang.iso639_3 and lang.script and lang.name and lang.family
    assert resolve_language("sk").family == resolve_language("sl").family == "Indo-European"
    assert resolve_language("ka").family == "Kartvelian"


def test_refsets():
    paper = resolve_refset("paper-12")
    assert paper.langs == ("mlt_Latn", "afr_Latn", "isl_Latn", "cym_Latn", "mkd_Cyrl", "lvs_Latn",
                           "lit_Latn", "slv_Latn", "slk_Latn", "est_Latn", "kat_Geor", "npi_Deva")
    assert len(resolve_refset("flores-200").langs) == len(all_languages())
    with pytest.raises(UnknownRefsetError):
        resolve_refset("paper-13")


def test_malformed_registry_is_one_line(tmp_path, monkeypatch):
    import lape_hub.registry as reg

    (tmp_path / "models.toml").write_text('[models."x"]\nrepo_id = "a/b"\n')
    monkeypatch.setenv("LAPE_HUB_REGISTRY", str(tmp_path))
    reg.models.cache_clear()
    try:
        with pytest.raises(RegistryError, match="lacks"):
            reg.models()
        (tmp_path / "models.toml").write_text("[models\n")
        reg.models.cache_clear()
        with pytest.raises(RegistryError, match="invalid TOML"):
            reg.models()
    finally:
        reg.models.cache_clear()
