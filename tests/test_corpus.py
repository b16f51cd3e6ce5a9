"""Corpus reading (txt, jsonl, parquet, SIB-200 TSV folders, Hub dispatch) and packing."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _tiny_models import tiny_tokenizer
from lape_hub import corpus
from lape_hub.corpus import iter_documents, read_documents, tokenize_and_pack
from lape_hub.errors import CorpusError

FIX = Path(__file__).resolve().parent / "fixtures" / "corpus"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIB = SHARED / "sib200"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


# ----------------------------------------------------------------- reading
def test_txt_one_document_per_line_skipping_blank_lines():
    assert read_documents(FIX / "docs.txt") == [
        "First document on one line.",
        "Second document, after a blank line.",
        "Third document.",
    ]


def test_jsonl_text_column_default_and_custom():
    assert read_documents(FIX / "docs.jsonl") == ["Alpha document.", "Beta document."]
    assert read_documents(FIX / "docs.jsonl", text_column="body") == ["Body alpha.", "Body beta.", "Body gamma."]
    with pytest.raises(CorpusError, match="no field 'title'"):
        read_documents(FIX / "docs.jsonl", text_column="title")


def test_parquet_text_column(tmp_path: Path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": ["one", "", "two", None], "n": [1, 2, 3, 4]}), path)
    assert read_documents(path, text_column="content") == ["one", "two"]
    with pytest.raises(CorpusError, match="no column 'text'"):
        read_documents(path)


def test_sib_layout_splits_and_csv_quoting():
    train = read_documents(FIX / "langs", "eng_Latn")
    assert len(train) == 3 and train[1] == 'She said "hello" twice, then left.'
    assert read_documents(FIX / "langs", "eng_Latn", split="test") == ["Rivers run to the sea.", "The vote was close."]
    assert read_documents(FIX / "langs", "mlt_Latn") == ["Il-vapur wasal kmieni.", "Ix-xemx tiddi fuq il-baħar."]
    assert read_documents(FIX / "langs", "eng_Latn", max_documents=2) == train[:2]


def test_flat_layout_one_file_per_language():
    assert read_documents(FIX / "flat", "eng_Latn") == ["A flat file per language.", "One more line."]
    assert read_documents(FIX / "flat", "npi_Deva") == ["नमस्ते संसार।"]


def test_missing_language_names_it_and_closest_folders():
    with pytest.raises(CorpusError) as err:
        read_documents(FIX / "langs", "npi_Deav")
    msg = str(err.value)
    assert "'npi_Deav'" in msg and "closest: npi_Deva" in msg and "\n" not in msg


def test_missing_split_and_bad_inputs(tmp_path: Path):
    with pytest.raises(CorpusError, match="no 'dev' split"):
        read_documents(FIX / "langs", "npi_Deva", split="dev")
    with pytest.raises(CorpusError, match="name the language"):
        read_documents(FIX / "langs")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unsupported corpus file type"):
        read_documents(tmp_path / "x.csv")
    with pytest.raises(CorpusError, match="not found"):
        read_documents(tmp_path / "nope.txt")


def test_hub_dataset_dispatch_uses_presets(monkeypatch):
    """Offline check of the Hub path: the GlotCC config/column preset and streaming."""
    datasets = pytest.importorskip("datasets")
    calls = {}

    def fake_load_dataset(repo, name, split, streaming, revision):
        calls.update(repo=repo, name=name, split=split, streaming=streaming)
        return iter([{"content": "doc one"}, {"content": "  "}, {"content": "doc two"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert read_documents("cis-lmu/GlotCC-V1", "npi_Deva") == ["doc one", "doc two"]
    assert calls == {"repo": "cis-lmu/GlotCC-V1", "name": "npi-Deva", "split": "train", "streaming": True}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(CorpusError, match="cannot read Hub dataset 'x/y'"):
        list(iter_documents("hf:x/y", "npi_Deva"))


# ----------------------------------------------------------------- packing
def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_pack_concatenates_with_bos_and_pads_only_last_row(tok):
    docs = ["abc", "de", "fghij"]
    p = tokenize_and_pack(docs, tok, seq_len=4, min_tokens=1)
    bos, pad = tok.bos_token_id, tok.pad_token_id
    stream = [bos, *_ids(tok, "abc"), bos, *_ids(tok, "de"), bos, *_ids(tok, "fghij")]
    assert p.n_tokens == len(stream) == 13 and p.n_documents == 3 and not p.truncated
    assert p.input_ids.shape == (4, 4)
    assert p.input_ids.flatten()[:13].tolist() == stream
    assert p.input_ids.flatten()[13:].tolist() == [pad] * 3
    assert p.attention_mask.tolist() == [[1] * 4, [1] * 4, [1] * 4, [1, 0, 0, 0]]
    assert p.attention_mask[:-1].all()


def test_pack_token_budget(tok):
    docs = ["abcdefgh"] * 10
    p = tokenize_and_pack(docs, tok, seq_len=8, max_tokens=20, min_tokens=1)
    assert p.n_tokens == 20 and p.truncated and p.input_ids.shape == (3, 8)
    exact = tokenize_and_pack(["abcdefgh"], tok, seq_len=8, max_tokens=9, min_tokens=1)
    assert exact.n_tokens == 9 and not exact.truncated
    # a lazy stream is not read past the budget
    consumed = []

    def gen():
        for i in range(10_000):
            consumed.append(i)
            yield "abcdefgh"

    tokenize_and_pack(gen(), tok, seq_len=8, max_tokens=18, min_tokens=1, batch_docs=4)
    assert len(consumed) <= 9


def test_pack_without_bos(tok):
    p = tokenize_and_pack(["ab", "cd"], tok, seq_len=2, min_tokens=1, add_bos=False)
    assert p.input_ids.tolist() == [_ids(tok, "ab"), _ids(tok, "cd")]


def test_pack_refuses_empty_and_short_corpora(tok):
    with pytest.raises(CorpusError, match="0 tokens in 0 documents"):
        tokenize_and_pack([], tok, seq_len=16, lang="mlt_Latn")
    with pytest.raises(CorpusError, match=r"'mlt_Latn' is too short: 4 tokens in 1 documents, need at least 16"):
        tokenize_and_pack(["abc"], tok, seq_len=16, lang="mlt_Latn")


def test_fingerprint_changes_with_content(tok):
    a = tokenize_and_pack(["abc", "def"], tok, seq_len=4, min_tokens=1)
    b = tokenize_and_pack(["abc", "deg"], tok, seq_len=4, min_tokens=1)
    assert a.fingerprint() == tokenize_and_pack(["abc", "def"], tok, seq_len=4, min_tokens=1).fingerprint()
    assert a.fingerprint() != b.fingerprint()


# ----------------------------------------------------------------- shared SIB-200 data
@pytest.mark.shared_data
@pytest.mark.skipif(not SIB.is_dir(), reason="../shared/data/sib200 is absent")
def test_sib200_shared_data(tok):
    train = read_documents(SIB, "npi_Deva", "train")
    assert len(train) == 701 and len(read_documents(SIB, "npi_Deva", "test")) == 204
    p = tokenize_and_pack(train, tok, seq_len=256, max_tokens=5000, lang="npi_Deva")
    assert p.n_tokens == 5000 and p.truncated
    with pytest.raises(CorpusError, match="closest: npi_Deva"):
        read_documents(SIB, "npi_Deav")


def test_module_exports():
    assert set(corpus.__all__) >= {"read_documents", "tokenize_and_pack", "PackedCorpus"}


def test_hub_split_names_follow_the_dataset(monkeypatch):
    """Local corpora call the validation split `dev`; SIB-200 on the Hub calls it `validation`."""
    import datasets

    from lape_hub.corpus import iter_hf_documents

    calls = []

    def fake_load(repo, name, *, split, streaming, revision):
        calls.append((repo, name, split))
        return [{"text": "Bonġu"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert list(iter_hf_documents("Davlan/sib200", "mlt_Latn", "dev")) == ["Bonġu"]
    list(iter_hf_documents("Davlan/sib200", "mlt_Latn", "train"))
    list(iter_hf_documents("openlanguagedata/flores_plus", "mlt_Latn"))
    assert calls == [("Davlan/sib200", "mlt_Latn", "validation"), ("Davlan/sib200", "mlt_Latn", "train"),
                     ("openlanguagedata/flores_plus", "mlt_Latn", "dev")]
