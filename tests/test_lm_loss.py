"""The chunked LM loss equals the plain one (value and every gradient) and never makes the
``[tokens, vocab]`` logits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

from _tiny_models import tiny_model
from lape_hub.lm_loss import chunked_nll, lm_head_of, lm_loss


def _batch(vocab: int = 260, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(4, vocab, (2, 12), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding in the second row
    return ids, mask


def _loss_and_grads(model, ids, mask, **kw):
    model.zero_grad(set_to_none=True)
    nll, n = lm_loss(model, ids, mask, **kw)
    nll.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return nll.detach(), n, grads


@pytest.mark.parametrize("family,tweak", [
    ("llama", None), ("phi3", None), ("qwen2", None),
    ("gemma3", "softcap"),   # Gemma's final_logit_softcapping
    ("gemma2", None),        # softcapping on by default (30.0)
    ("cohere", "scale"),     # Cohere multiplies the logits by logit_scale
])
def test_chunked_loss_and_gradients_equal_the_plain_loss(family, tweak):
    model = tiny_model(family).train()
    if tweak == "softcap":
        model.config.final_logit_softcapping = 2.0  # small: the cap changes the loss a lot
    if tweak == "scale":
        model.logit_scale = 0.37
    assert lm_head_of(model) is not None
    for p in model.parameters():
        p.requires_grad_(True)  # the head's weight too: its chunked gradient is checked
    ids, mask = _batch()
    plain, n0, g0 = _loss_and_grads(model, ids, mask, chunked=False)
    lean, n1, g1 = _loss_and_grads(model, ids, mask, chunk_tokens=5)  # 18 targets: 4 chunks
    assert n0 == n1 == 11 + 7
    torch.testing.assert_close(lean, plain, rtol=1e-5, atol=1e-4)
    assert g0.keys() == g1.keys() and any("lm_head" in k or "embed" in k for k in g0)
    for k in g0:
        scale = g0[k].abs().max().item()  # float32 summation order differs: relative to the largest entry
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-5 * scale, msg=k)


def test_softcap_and_scale_are_applied():
    """A head without the cap would give a different loss: the parametrized test could not
    pass if the cap were ignored (guards against that test being vacuous)."""
    h, w = torch.randn(6, 8), torch.randn(30, 8) * 3
    y = torch.randint(0, 30, (6,))
    z = h @ w.T
    capped = F.cross_entropy(2.0 * torch.tanh(z / 2.0), y, reduction="sum")
    torch.testing.assert_close(chunked_nll(h, w, y, softcap=2.0, chunk_tokens=4), capped)
    assert not torch.allclose(capped, F.cross_entropy(z, y, reduction="sum"))
    torch.testing.assert_close(chunked_nll(h, w, y, scale=0.5, chunk_tokens=4),
                               F.cross_entropy(0.5 * z, y, reduction="sum"))


def test_bias_gradient():
    h = torch.randn(7, 5, requires_grad=True)
    w = torch.randn(13, 5, requires_grad=True)
    b = torch.randn(13, requires_grad=True)
    y = torch.randint(0, 13, (7,))
    F.cross_entropy(F.linear(h, w, b), y, reduction="sum").backward()
    ref = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    (2 * chunked_nll(h, w, y, bias=b, chunk_tokens=3)).backward()  # grad_out 2 is applied
    for got, want in zip((h.grad, w.grad, b.grad), ref):
        torch.testing.assert_close(got, 2 * want)


def test_bf16_autocast_chunked_equals_plain_under_the_same_autocast():
    model = tiny_model("gemma3").train()
    ids, mask = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, _, g0 = _loss_and_grads(model, ids, mask, chunked=False)
        lean, _, g1 = _loss_and_grads(model, ids, mask, chunk_tokens=5)
    torch.testing.assert_close(lean, plain, rtol=2e-2, atol=0.0)
    assert all(g.dtype == torch.float32 for g in g1.values())  # float32 weights keep float32 grads


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op creates (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_full_logits_are_never_allocated():
    """Moderate vocabulary (the embedding is the largest weight): the plain loss makes a
    [tokens, vocab] tensor, the chunked one never does, in forward or backward."""
    vocab = 6000
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).train()
    ids = torch.randint(0, vocab, (2, 64), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    n_logits = ids.numel() * vocab
    for p in model.parameters():
        p.requires_grad_(False)
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)  # like sparse training: head frozen

    with _LargestTensor() as plain:
        nll, _ = lm_loss(model, ids, mask, chunked=False)
        nll.backward()
    assert plain.largest >= n_logits  # the probe sees the logits when they exist
    with _LargestTensor() as lean:
        nll, _ = lm_loss(model, ids, mask, chunk_tokens=16)
        nll.backward()
    assert lean.largest <= max(16 * vocab, model.model.embed_tokens.weight.numel())
    assert lean.largest < n_logits / 4


def test_models_outside_the_checked_families_take_the_plain_path():
    model = tiny_model("llama")
    model.config.model_type = "some-new-family"
    assert lm_head_of(model) is None
    ids, mask = _batch()
    with torch.no_grad():
        a, _ = lm_loss(model, ids, mask)
        model.config.model_type = "llama"
        b, _ = lm_loss(model, ids, mask)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
