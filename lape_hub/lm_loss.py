"""The language-model loss without the ``[tokens, vocab]`` logits: a chunked LM head + NLL.

A causal LM's loss is ``cross_entropy(lm_head(h), next_token)``. With a large vocabulary the
logits dominate memory: Gemma-3 has 262,144 entries, so 2 x 256 tokens make a 0.5 GB float32
logits tensor, and its softmax and gradient as much again, while the 270M model itself is
1.1 GB. :func:`chunked_nll` computes the same summed NLL a few hundred tokens at a time and,
when gradients are needed, the gradient of each chunk right away (softmax minus one-hot,
through the final-logit softcapping and logit scale where the model has them), so only one
``[chunk, vocab]`` block exists at any time. It is the same arithmetic as the plain loss
(float32 softmax; the head's matrix products in the autocast dtype when autocast is on).

Models are handled by what their ``*ForCausalLM.forward`` does after the decoder:
:data:`LEAN_MODEL_TYPES` lists the families checked to be exactly ``lm_head`` (+ Gemma-2/3's
``final_logit_softcapping``, Cohere's ``logit_scale``); any other model takes the plain path
(full logits), which is always correct.

Example::

    >>> from lape_hub.lm_loss import lm_loss
    >>> nll, n = lm_loss(model, ids, mask)        # summed NLL over real tokens, their count  # doctest: +SKIP
    >>> (nll / n).backward()                                                                 # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CHUNK_ELEMENTS", "LEAN_MODEL_TYPES", "LmHead", "chunked_nll", "lm_head_of", "lm_loss", "next_token_labels"]

#: logits per chunk (float32: 128 MiB): 128 tokens of Gemma-3's 262,144-entry vocabulary
CHUNK_ELEMENTS = 1 << 25
#: model types whose CausalLM forward is ``lm_head(decoder(...).last_hidden_state)`` plus at
#: most a final softcapping (gemma2/gemma3) or a logit scale (cohere)
LEAN_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3", "gemma3_text",
    "cohere", "cohere2", "olmo", "olmo2",
})


@dataclass
class LmHead:
    """How a causal LM turns hidden states into logits (what :func:`lm_loss` needs)."""

    decoder: nn.Module          # returns ``last_hidden_state``
    weight: torch.Tensor        # [vocab, d_model] (the embedding matrix when tied)
    bias: torch.Tensor | None
    softcap: float | None       # logits = cap * tanh(logits / cap)
    scale: float                # logits = logits * scale


def lm_head_of(model: nn.Module) -> LmHead | None:
    """The decoder and head of ``model`` (through peft wrappers), or None when its logits are
    computed in a way this module does not reproduce (then use the plain loss)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(lm, "config", None)
    if getattr(cfg, "model_type", None) not in LEAN_MODEL_TYPES:
        return None
    get_dec, get_head = getattr(lm, "get_decoder", None), getattr(lm, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    decoder = get_dec() if callable(get_dec) else None
    if type(head) is not nn.Linear or decoder is None or decoder is lm:
        return None
    scale = 1.0
    if cfg.model_type in ("cohere", "cohere2"):
        scale = float(getattr(lm, "logit_scale", getattr(cfg, "logit_scale", 1.0)))
    softcap = getattr(cfg, "final_logit_softcapping", None) if cfg.model_type.startswith("gemma") else None
    return LmHead(decoder, head.weight, head.bias, float(softcap) if softcap else None, scale)


class _ChunkedLinearNLL(torch.autograd.Function):
    """Summed NLL of ``labels`` under ``softcap(scale * (hidden @ weight.T + bias))``;
    gradients are computed chunk by chunk in forward and only scaled in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk, softcap, scale, cdtype):  # noqa: D401
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        need = need_h or need_w or need_b
        device_type = hidden.device.type
        with torch.autocast(device_type, enabled=False):
            w = weight.detach().to(cdtype)
            b = bias.detach().to(cdtype) if bias is not None else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            gh = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
            gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            gb = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s:s + chunk].detach().to(cdtype)
                y = labels[s:s + chunk]
                z = F.linear(h, w, b).float()
                if scale != 1.0:
                    z.mul_(scale)
                t = None
                if softcap:
                    t = torch.tanh(z.div_(softcap))
                    z = torch.mul(t, softcap, out=z)
                lse = torch.logsumexp(z, dim=-1)
                total += (lse - z.gather(1, y[:, None]).squeeze(1)).sum()
                if not need:
                    continue
                g = z.sub_(lse[:, None]).exp_()                           # softmax, in place
                g[torch.arange(len(y), device=g.device), y] -= 1.0       # d nll / d logits
                if t is not None:
                    g.mul_(t.mul_(t).neg_().add_(1.0))                    # through cap * tanh(z / cap)
                if scale != 1.0:
                    g.mul_(scale)
                if need_b:
                    gb += g.sum(0)
                g = g.to(cdtype)
                if need_h:
                    gh[s:s + chunk] = (g @ w).float()
                if need_w:
                    gw += (g.t() @ h).float()
        ctx.save_for_backward(*(x for x in (gh, gw, gb) if x is not None))
        ctx.grads = (gh is not None, gw is not None, gb is not None)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        out = []
        for has, dtype in zip(ctx.grads, ctx.dtypes):
            out.append((next(saved) * grad_out).to(dtype) if has else None)
        return (*out, None, None, None, None, None)


def chunked_nll(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                bias: torch.Tensor | None = None, softcap: float | None = None, scale: float = 1.0,
                chunk_tokens: int | None = None) -> torch.Tensor:
    """Summed ``cross_entropy(softcap(scale * (hidden @ weight.T + bias)), labels)`` over rows.

    ``hidden`` ``[n, d]``, ``weight`` ``[vocab, d]``, ``labels`` ``[n]`` (all real targets).
    Never holds more than ``chunk_tokens`` rows of logits (default: :data:`CHUNK_ELEMENTS`
    divided by the vocabulary). Under autocast the products run in the autocast dtype, the
    softmax in float32, as the plain loss does.

    >>> h, w, y = torch.randn(5, 4), torch.randn(11, 4), torch.tensor([0, 3, 10, 2, 2])
    >>> ref = F.cross_entropy(h @ w.T, y, reduction="sum")
    >>> torch.allclose(chunked_nll(h, w, y, chunk_tokens=2), ref, atol=1e-5)
    True
    """
    if chunk_tokens is None:
        chunk_tokens = max(1, CHUNK_ELEMENTS // weight.shape[0])
    dev = hidden.device.type
    cdtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
    return _ChunkedLinearNLL.apply(hidden, weight, bias, labels, int(chunk_tokens),
                                   float(softcap) if softcap else None, float(scale), cdtype)


def head_logits(head: LmHead, hidden: torch.Tensor) -> torch.Tensor:
    """Float32 logits of the hidden states ``hidden`` (``[..., d_model]``) through ``head``
    (bias, logit scale and softcapping as the model applies them): for a few positions only,
    instead of the model's ``[batch, seq, vocab]`` logits.

    >>> head = lm_head_of(model); head_logits(head, hidden[:, -1]).shape    # doctest: +SKIP
    torch.Size([2, 262144])
    """
    z = F.linear(hidden.float(), head.weight.float(), None if head.bias is None else head.bias.float())
    if head.scale != 1.0:
        z = z * head.scale
    if head.softcap:
        z = torch.tanh(z / head.softcap) * head.softcap
    return z


def next_token_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ``t`` predicts token ``t + 1``; padding and the last position get ``-100``."""
    labels = input_ids.masked_fill(attention_mask == 0, -100).roll(-1, dims=1)
    labels[:, -1] = -100
    return labels


def lm_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
            chunked: bool = True, chunk_tokens: int | None = None) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over real tokens and their count (padding never counts).

    With ``chunked`` (and a model of :data:`LEAN_MODEL_TYPES`) the logits are never
    materialized (:func:`chunked_nll`); otherwise the model's own logits are used.

    >>> nll, n = lm_loss(model, ids, mask); (nll / n).item()                # doctest: +SKIP
    """
    labels = next_token_labels(input_ids, attention_mask)
    head = lm_head_of(model) if chunked else None
    if head is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                              ignore_index=-100, reduction="sum")
        return nll, int((labels != -100).sum())
    hidden = head.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    flat = labels.reshape(-1)
    keep = (flat != -100).nonzero().squeeze(1)
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)
    nll = chunked_nll(h, head.weight, flat.index_select(0, keep), bias=head.bias, softcap=head.softcap,
                      scale=head.scale, chunk_tokens=chunk_tokens)
    return nll, int(keep.numel())
