"""`lape-hub plan` / `build` end to end on a tiny local model (no downloads)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from _tiny_models import save_tiny

REPO_REGISTRY = __import__("lape_hub.paths", fromlist=["x"]).registry_dir()

ALPHABETS = {  # synthetic "languages": words drawn from different scripts
    "mlt_Latn": "abcdefghilmnopqrstuvzġħżċ", "npi_Deva": "कखगघचछजझटठडढतथदधनपफबभमयरलवशसह",
    "mkd_Cyrl": "абвгдѓежзѕијклљмнњопрстќуфхцчџш", "kat_Geor": "აბგდევზთიკლმნოპჟრსტუფქღყშჩცძწჭხჯჰ",
}


def synthetic_corpus(root, langs, n_docs=60, seed=0):
    rng = np.random.default_rng(seed)
    for lang in langs:
        folder = root / lang
        folder.mkdir(parents=True)
        letters = list(ALPHABETS[lang])
        rows = ["index_id\tcategory\ttext"]
        for i in range(n_docs):
            words = ["".join(rng.choice(letters, rng.integers(2, 7))) for _ in range(rng.integers(5, 12))]
            rows.append(f"{i}\tnone\t{' '.join(words)}")
        (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    import lape_hub.languages as L
    import lape_hub.registry as R

    reg = tmp_path / "registry"
    reg.mkdir()
    shutil.copy(REPO_REGISTRY / "languages.toml", reg / "languages.toml")
    model_dir = save_tiny("llama", tmp_path / "tiny-llama")
    (reg / "models.toml").write_text(f'''
[models."tiny-llama"]
repo_id = "{model_dir}"
revision = "local"
family = "llama"
n_layers = 3
d_model = 32
d_ffn = 48
total_params = 60000
activation = "silu"
''')
    (reg / "refsets.toml").write_text('''
[refsets.tiny-3]
langs = ["mt", "ne", "mk"]
[refsets.tiny-4]
langs = ["mt", "ne", "mk", "ka"]
[refsets.tiny-12]
langs = ["mt", "ne", "mk", "ka", "en", "de", "fr", "es", "it", "pt", "nl", "sv"]
''')
    monkeypatch.setenv("LAPE_HUB_REGISTRY", str(reg))
    monkeypatch.setenv("LAPE_HUB_CATALOG", str(tmp_path / "catalog"))
    (tmp_path / "catalog").mkdir()  # plan, fetch and verify refuse a missing catalog folder
    monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path / "cache"))
    for f in (R.models, R.refsets, L._index):
        f.cache_clear()
    yield tmp_path
    for f in (R.models, R.refsets, L._index):
        f.cache_clear()


def cli(*args):
    from lape_hub.cli import cli as group

    return CliRunner().invoke(group, list(args))


def test_build_then_add_one_language(tiny_registry):
    from lape_hub.activation_counts import count_activations
    from lape_hub.builder import read_counts
    from lape_hub.catalog import Catalog
    from lape_hub.corpus import read_documents, tokenize_and_pack
    from lape_hub.models import load_model

    corpus = synthetic_corpus(tiny_registry / "corpus", ALPHABETS)
    rule = ["--dtype", "float32", "--bos", "count"]
    common = ["--model", "tiny-llama", "--corpus", str(corpus), "--max-tokens", "1500",
              "--seq-len", "64", "--batch-size", "4", "--quiet", *rule]
    r = cli("plan", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", "corpus",
            "--max-tokens", "1500", *rule)
    assert r.exit_code == 0 and "missing activation counts: 3 of 3" in r.output, r.output
    assert r.output.strip().splitlines()[-1] == (
        "to bring the catalog up to date: lape-hub build --model tiny-llama --refset tiny-3 "
        "--corpus corpus --split train --max-tokens 1500 --dtype float32 --bos count")
    r = cli("build", "--refset", "tiny-3", *common)
    assert r.exit_code == 0, r.output
    assert "counted 3 languages" in r.output and "LAPE and neuron sets of tiny-3 updated" in r.output
    r = cli("plan", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(corpus),
            "--max-tokens", "1500", *rule)  # a path and its id are the same corpus
    assert "nothing to build" in r.output, r.output

    # the stored counts are exactly what the counting API gives on the same packed corpus
    cat = Catalog()
    model, tok = load_model(str(tiny_registry / "tiny-llama"))
    stored = read_counts(cat, "tiny-llama", ["npi_Deva"], revision="local", corpus="corpus:train@1500")
    packed = tokenize_and_pack(read_documents(corpus, "npi_Deva"), tok, 64, 1500, min_tokens=1000)
    direct = count_activations(model, packed, batch_size=4, progress=False)
    assert (stored.over_zero[:, :, 0] == direct.over_zero).all()
    assert stored.n_tokens[0] == direct.n_tokens == 1500

    # a new reference set with one more language: only that language runs through the model
    counts_files = {p: p.stat().st_mtime_ns for p in cat.root.glob("activation_counts/**/*.parquet")}
    r = cli("build", "--refset", "tiny-4", *common)
    assert r.exit_code == 0, r.output
    assert "[1/1] kat_Geor" in r.output and "counted 1 languages" in r.output
    assert all(p.stat().st_mtime_ns == t for p, t in counts_files.items())
    ns = cat.neuron_set("tiny-llama", "ka", refset="tiny-4")
    assert ns.metadata["params"]["langs"] == ["mlt_Latn", "npi_Deva", "mkd_Cyrl", "kat_Geor"]

    # verify: one row per zeroed language, one column per evaluated language
    r = cli("verify", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(corpus),
            "--split", "train", "--max-tokens", "128", "--seq-len", "64", "--format", "csv")
    assert r.exit_code == 0, r.output
    rows = [line.split(",") for line in r.stdout.strip().splitlines()[1:]]
    assert len(rows) == 9 and {row[0] for row in rows} == {"mlt_Latn", "npi_Deva", "mkd_Cyrl"}
    assert all(float(row[2]) > 1.0 for row in rows)  # baseline perplexities
    r = cli("verify", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(corpus),
            "--split", "train", "--max-tokens", "128", "--seq-len", "64", "--format", "csv",
            "--langs", "ne", "--eval-langs", "mt,ne")
    assert r.exit_code == 0, r.output
    rows = [line.split(",") for line in r.stdout.strip().splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("npi_Deva", "mlt_Latn"), ("npi_Deva", "npi_Deva")]


def test_dtype_and_bos_are_part_of_the_identity(tiny_registry):
    from lape_hub.activation_counts import count_activations
    from lape_hub.builder import read_counts
    from lape_hub.catalog import Catalog
    from lape_hub.corpus import read_documents, tokenize_and_pack
    from lape_hub.models import load_model

    corpus = synthetic_corpus(tiny_registry / "corpus", ALPHABETS)
    base = ["--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(corpus), "--max-tokens", "1500"]
    run = ["--seq-len", "64", "--batch-size", "4", "--quiet"]
    r = cli("build", *base, *run, "--dtype", "float32", "--bos", "skip")
    assert r.exit_code == 0 and "as corpus:train@1500+nobos" in r.output, r.output
    cat = Catalog()
    stored = read_counts(cat, "tiny-llama", ["npi_Deva"], revision="local", corpus="corpus:train@1500+nobos")
    model, tok = load_model(str(tiny_registry / "tiny-llama"))
    packed = tokenize_and_pack(read_documents(corpus, "npi_Deva"), tok, 64, 1500, min_tokens=1000)
    n_bos = int((packed.input_ids == tok.bos_token_id).sum())
    direct = count_activations(model, packed, batch_size=4, progress=False, skip_token_id=tok.bos_token_id)
    assert n_bos > 10 and stored.n_tokens[0] == direct.n_tokens == 1500 - n_bos
    assert (stored.over_zero[:, :, 0] == direct.over_zero).all()
    sig = cat.read("activation_counts", model="tiny-llama", lang="npi_Deva").column("signature")[0].as_py()
    assert "|dtype:float32|bos:skip|" in sig

    # asked with another BOS rule: nothing is counted yet; plan names what is stored and the fix
    r = cli("plan", *base, "--dtype", "float32", "--bos", "count")
    assert "missing activation counts: 3 of 3" in r.output, r.output
    assert (f"corpus:train@1500+nobos (corpus train, 1,500 tokens, float32, BOS skipped; 3 of 3 "
            f"languages): lape-hub plan --model tiny-llama --refset tiny-3 --corpus {corpus} "
            f"--split train --max-tokens 1500 --dtype float32 --bos skip") in r.output, r.output
    assert r.output.strip().splitlines()[-1].endswith("--max-tokens 1500 --dtype float32 --bos count")
    # without the exact --max-tokens: the stored budget is named, with the command that finds it
    r = cli("plan", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", "corpus", "--dtype", "float32")
    assert "missing activation counts: 3 of 3" in r.output
    assert "--corpus corpus --split train --max-tokens 1500 --dtype float32 --bos skip" in r.output, r.output

    # bfloat16: entries of their own beside the float32 ones; LAPE follows the last build
    r = cli("build", *base, *run, "--dtype", "bfloat16", "--bos", "skip")
    assert r.exit_code == 0 and "counted 3 languages" in r.output and "+bf16+nobos" in r.output, r.output
    assert {e.key["corpus"] for e in cat.entries("activation_counts", model="tiny-llama")} == \
        {"corpus:train@1500+nobos", "corpus:train@1500+bf16+nobos"}
    r = cli("plan", *base, "--dtype", "float32", "--bos", "skip")
    assert "activation counts: all 3" in r.output
    assert "stale (built on local · corpus:train@1500+bf16+nobos)" in r.output, r.output
    ns = cat.neuron_set("tiny-llama", "ne", refset="tiny-3")
    assert "|dtype:bfloat16|bos:skip|" in ns.metadata["signature"]


def test_plan_and_build_take_the_same_corpus_values(tiny_registry, monkeypatch):
    synthetic_corpus(tiny_registry / "data" / "corpus", ["mlt_Latn", "npi_Deva", "mkd_Cyrl"])
    args = ["--model", "tiny-llama", "--refset", "tiny-3", "--corpus", "corpus", "--max-tokens",
            "1200", "--dtype", "float32"]
    monkeypatch.delenv("LAPE_HUB_CORPORA", raising=False)
    r = cli("build", *args, "--seq-len", "64", "--quiet")
    assert r.exit_code != 0 and "LAPE_HUB_CORPORA" in str(r.exception or r.output)
    monkeypatch.setenv("LAPE_HUB_CORPORA", str(tiny_registry / "data"))
    r = cli("build", *args, "--seq-len", "64", "--quiet")
    assert r.exit_code == 0 and "counted 3 languages" in r.output, r.output
    r = cli("plan", *args)
    assert r.exit_code == 0 and "nothing to build" in r.output, r.output


def test_partial_build_hints_name_the_refset_and_only_what_is_missing(tiny_registry):
    corpus = synthetic_corpus(tiny_registry / "corpus", ALPHABETS)
    r = cli("build", "--model", "tiny-llama", "--refset", "tiny-12", "--lang", "mt", "--corpus",
            str(corpus), "--max-tokens", "1200", "--seq-len", "64", "--quiet", "--dtype", "float32")
    assert r.exit_code == 0, r.output
    waiting = ["npi_Deva", "mkd_Cyrl", "kat_Geor", "eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn",
               "ita_Latn", "por_Latn", "nld_Latn"]  # 10 of the 11 shown, then "…"
    assert f"LAPE for tiny-12 waits for 11 languages: {', '.join(waiting)}, …\n" in r.output, r.output
    assert (f"count them with: lape-hub build --model tiny-llama --refset tiny-12 --corpus {corpus} "
            "--split train --max-tokens 1200 --dtype float32 --bos count") in r.output
    # fetch of the counted language: the hint is the set that was being built, without --lang
    r = cli("fetch", "--model", "tiny-llama", "--lang", "mt")
    msg = str(r.exception or "") + r.output
    assert r.exit_code != 0 and ("lape-hub build --model tiny-llama --refset tiny-12 --corpus corpus "
                                 "--split train --max-tokens 1200 --dtype float32 --bos count") in msg, msg
    assert "--lang" not in msg
    r = cli("fetch", "--model", "tiny-llama", "--lang", "mk", "--refset", "tiny-3")
    msg = str(r.exception or "") + r.output
    assert r.exit_code != 0 and "--refset tiny-3 --corpus corpus" in msg and "is not in" not in msg, msg
    r = cli("fetch", "--model", "tiny-llama", "--lang", "en", "--refset", "tiny-3")
    msg = str(r.exception or "") + r.output
    assert r.exit_code != 0 and "(eng_Latn is not in tiny-3) lape-hub build" in msg, msg


def test_short_corpus_is_counted_whole_with_a_warning(tiny_registry):
    from lape_hub.catalog import Catalog
    from lape_hub.corpus import read_documents, tokenize_and_pack
    from lape_hub.models import load_model

    corpus = synthetic_corpus(tiny_registry / "corpus", ["mlt_Latn", "npi_Deva"], n_docs=300)
    synthetic_corpus(corpus, ["mkd_Cyrl"], n_docs=40, seed=1)
    _, tok = load_model(str(tiny_registry / "tiny-llama"))
    whole = tokenize_and_pack(read_documents(corpus, "mkd_Cyrl"), tok, 64, None, min_tokens=1).n_tokens
    assert 1000 <= whole < 5000
    args = ["--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(corpus), "--max-tokens",
            "5000", "--dtype", "float32"]
    r = cli("build", *args, "--seq-len", "64", "--quiet")
    assert r.exit_code == 0, r.output
    assert (f"warning: corpus for mkd_Cyrl has only {whole:,} tokens (< --max-tokens 5,000): counted "
            f"all of them, stored as corpus:train@{whole}") in r.stderr
    assert "LAPE and neuron sets of tiny-3 updated" in r.output
    keys = {e.key["lang"]: e.key["corpus"] for e in Catalog().entries("activation_counts")}
    assert keys == {"mlt_Latn": "corpus:train@5000", "npi_Deva": "corpus:train@5000",
                    "mkd_Cyrl": f"corpus:train@{whole}"}
    assert "nothing to build" in cli("plan", *args).output
    r = cli("build", *args, "--seq-len", "64", "--quiet")
    assert "counted 0 languages" in r.output and "already current" in r.output
    # a smaller budget than the short corpus holds is another count, not this one
    assert "missing activation counts: 3 of 3" in cli("plan", *args[:-3], "999", "--dtype", "float32").output


def test_build_refuses_bad_corpora(tiny_registry, monkeypatch):
    corpus = synthetic_corpus(tiny_registry / "corpus", ["mlt_Latn", "npi_Deva"])
    r = cli("build", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(corpus),
            "--max-tokens", "1500", "--seq-len", "64", "--quiet")
    assert r.exit_code != 0 and "mkd_Cyrl" in str(r.exception or r.output)
    short = synthetic_corpus(tiny_registry / "short", ["mlt_Latn", "npi_Deva", "mkd_Cyrl"], n_docs=2)
    r = cli("build", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(short),
            "--seq-len", "64", "--quiet")
    assert r.exit_code != 0 and "tokens" in str(r.exception or r.output)
    # a language with an empty file: refused before the model is loaded
    empty = synthetic_corpus(tiny_registry / "empty", ["mlt_Latn", "npi_Deva", "mkd_Cyrl"])
    (empty / "mkd_Cyrl" / "train.tsv").write_text("index_id\tcategory\ttext\n")
    import lape_hub.models as models

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    r = cli("build", "--model", "tiny-llama", "--refset", "tiny-3", "--corpus", str(empty),
            "--seq-len", "64", "--quiet")
    assert r.exit_code != 0 and "no train text for mkd_Cyrl" in str(r.exception or r.output)


def test_unknown_architecture_is_one_line(tmp_path):
    import subprocess
    import sys

    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=300)).save_pretrained(tmp_path / "gpt2")
    code = ("from lape_hub.ffn import find_ffn_layers\n"
            "from transformers import AutoModelForCausalLM\n"
            f"find_ffn_layers(AutoModelForCausalLM.from_pretrained({str(tmp_path / 'gpt2')!r}))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "ArchitectureError" in r.stderr and "GPT2MLP" in r.stderr
