"""Tiny random-init decoders of every supported family and an offline byte-level tokenizer.

Shared by the model-side tests (ffn, activation counts, verify); nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers import (
    CohereConfig,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
D_MODEL, D_FFN, N_LAYERS = 32, 48, 3

_COMMON = dict(
    hidden_size=D_MODEL,
    intermediate_size=D_FFN,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    vocab_size=len(SPECIALS) + 256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON),
    "mistral": lambda: MistralConfig(**_COMMON, sliding_window=None),
    "gemma2": lambda: Gemma2Config(**_COMMON, head_dim=8, sliding_window=16, query_pre_attn_scalar=8),
    "gemma3": lambda: Gemma3TextConfig(**_COMMON, head_dim=8, sliding_window=16, query_pre_attn_scalar=8),
    "qwen2": lambda: Qwen2Config(**_COMMON),
    "qwen3": lambda: Qwen3Config(**_COMMON, head_dim=8),
    "cohere": lambda: CohereConfig(**_COMMON),
    "phi3": lambda: Phi3Config(**_COMMON),
}
FAMILIES = sorted(CONFIGS)
FUSED = {"phi3"}


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A random-init CausalLM of ``family`` in eval mode, float32, deterministic per seed."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CONFIGS[family](), dtype=torch.float32)
    # Random init gives tiny activations; scale weights up a bit so gates fire both ways.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.2)
    return model.eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per UTF-8 byte, ids 4..259) with BOS/EOS/PAD/UNK."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def save_tiny(family: str, path: Path, seed: int = 0) -> Path:
    """Save a tiny model + tokenizer to ``path`` (for subprocess tests); return ``path``."""
    tiny_model(family, seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Packing documents keeps the model busy on real tokens.",
    "नेपाली भाषा देवनागरी लिपिमा लेखिन्छ।",
    "Il-Malti huwa l-lingwa nazzjonali ta' Malta.",
    "Short one.",
    "Numbers 12345 and symbols !? are bytes too.",
]
