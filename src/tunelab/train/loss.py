"""The training loss, computing output-layer logits only where a label exists.

A causal LM's head maps every position's hidden state to the vocabulary. In chat SFT
most positions (system, user turns, padding) carry no loss, and in Gemma 3 270M the
head (262k x 640, tied to the embeddings) is over 60% of the parameters. So we run the
decoder body, keep the hidden states whose label is not -100, and apply the head to
those rows only:

    hidden (B, T, H) --select labels != -100--> (N, H) --lm_head--> (N, V) --> CE sum
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.data.tokenize import IGNORE

CHUNK = 256  # rows of logits alive at once: 256 x 262k vocab x 4 bytes = 268 MB


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class SelectedLogitsLoss(nn.Module):
    """Wraps a causal LM; forward returns (summed cross-entropy, number of label tokens).

    Labels are already shifted (position t holds the target for token t+1), so packed
    examples never predict across their boundary. This module is what accelerate
    wraps for DDP/FSDP, so gradient sync sees one forward call.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **images: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lm = causal_lm(self.model)
        # with images (pixel_values, image_grid_thw) the VLM's body merges their embeddings at the pads
        body = lm.model if images else lm.get_decoder()
        out = body(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False,
                   **images)
        keep = labels != IGNORE  # (B, T)
        hidden = out.last_hidden_state[keep]  # (N, H)
        loss_sum = head_loss(lm, hidden, labels[keep])
        return loss_sum, keep.sum()


def head_loss(lm: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Summed cross-entropy of lm_head(hidden) against targets, `chunk` rows of logits at a time."""
    head = lm.get_output_embeddings()
    cap = getattr(lm.config, "final_logit_softcapping", None) or 0.0
    rows = token_rows(head)
    if rows is not None:  # lora.trainable_tokens: chunked too, only the trained rows get a gradient
        return _rows_head_loss(hidden, targets, rows, chunk, float(cap))
    if not isinstance(head, nn.Linear) or head.bias is not None:  # e.g. an adapted lm_head: plain path
        logits = head_logits(lm, hidden)
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    grad_on = torch.is_grad_enabled()  # (inside Function.forward it is always off)
    need = (grad_on and hidden.requires_grad, grad_on and head.weight.requires_grad)
    return _ChunkedHeadCE.apply(hidden, head.weight, targets, chunk, float(cap), need)


def _rows_head_loss(hidden: torch.Tensor, targets: torch.Tensor, rows, chunk: int, cap: float) -> torch.Tensor:
    base, ids, delta = rows
    weight = base.weight.index_copy(0, ids, delta.detach().to(base.weight.dtype))  # (V, H): the head as trained
    grad_on = torch.is_grad_enabled()
    need = (grad_on and hidden.requires_grad, False)
    return _ChunkedHeadCE.apply(hidden, weight, targets, chunk, cap, need, ids,
                                delta if grad_on and delta.requires_grad else None)


def token_rows(head: nn.Module) -> tuple[nn.Linear, torch.Tensor, torch.Tensor] | None:
    """(base linear, ids (k,), trained rows (k, H)) of an output layer whose rows peft's trainable
    tokens replace (lora.trainable_tokens on a tied model), else None."""
    layer = getattr(head, "token_adapter", None)
    if layer is None or layer.merged or layer.disable_adapters or len(layer.active_adapters) != 1:
        return None
    base, name = layer.get_base_layer(), layer.active_adapters[0]
    if not isinstance(base, nn.Linear) or base.bias is not None:
        return None
    ids = torch.tensor(layer.token_indices[name], dtype=torch.long, device=base.weight.device)
    return base, ids, layer.trainable_tokens_delta[name]


class _ChunkedHeadCE(torch.autograd.Function):
    """Cross-entropy through the output layer without holding (N, vocab) logits.

    With a 262k vocabulary the logits of 1,000 positions take 1 GB in fp32, and autograd
    would keep them plus the log-softmax for backward. Instead the forward walks `chunk`
    rows at a time and already computes the gradient w.r.t. the hidden states (and the
    head weight, when it trains): d loss / d logits = softmax - onehot, times the cap's
    tanh derivative. Backward only scales those stored gradients. Given `ids` and their rows
    `delta` (already written into `weight`), only those rows of the head get a gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, cap, need, ids=None, delta=None):
        need_h, need_w = need
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_rows = torch.zeros_like(delta, dtype=torch.float32) if delta is not None else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            logp, capped = _chunk_logp(h, weight, cap)  # (c, V) fp32
            total -= logp.gather(1, t[:, None]).sum()
            if need_h or need_w or grad_rows is not None:
                grad = _dloss_dlogits(logp, capped, t).to(weight.dtype)  # softmax - onehot
                if need_h:
                    grad_h[start:start + chunk] = grad @ weight
                if need_w:
                    grad_w += grad.t().float() @ h.float()
                if grad_rows is not None:
                    grad_rows += grad[:, ids].t().float() @ h.float()  # (k, H)
        ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None, grad_rows)
        ctx.weight_dtype, ctx.rows_dtype = weight.dtype, delta.dtype if delta is not None else None
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_rows = ctx.saved_tensors
        dh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        dw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        drows = (grad_rows * grad_out).to(ctx.rows_dtype) if grad_rows is not None else None
        return dh, dw, None, None, None, None, None, drows


def head_logprobs(lm: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """log p(target) per row of lm_head(hidden), (N,), `chunk` rows of logits at a time.

    Preference losses weight each sequence's log-probs differently, so unlike `head_loss`
    the upstream gradient is per row: d logp_i / d h_i = (onehot_i - softmax_i) W is kept
    from the forward, and the head weight's gradient (full fine-tuning) is recomputed.
    """
    head = lm.get_output_embeddings()
    cap = getattr(lm.config, "final_logit_softcapping", None) or 0.0
    if not isinstance(head, nn.Linear) or head.bias is not None or hidden.shape[0] == 0:
        logits = head_logits(lm, hidden)
        return torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    grad_on = torch.is_grad_enabled()
    need = (grad_on and hidden.requires_grad, grad_on and head.weight.requires_grad)
    return _ChunkedHeadLogp.apply(hidden, head.weight, targets, chunk, float(cap), need)


def _chunk_logp(h: torch.Tensor, weight: torch.Tensor, cap: float):
    """(log-softmax of lm_head(h) in fp32, tanh of the capped logits or None) for one chunk of rows.

    One fused log_softmax reads the (c, V) logits in the weight dtype and writes fp32: a
    separate upcast, logsumexp and subtraction each made a full (c, V) pass (and a temporary).
    """
    logits = h @ weight.t()  # (c, V)
    if not cap:
        return torch.log_softmax(logits, dim=-1, dtype=torch.float32), None
    capped = torch.tanh(logits.float() / cap)
    return torch.log_softmax(capped * cap, dim=-1), capped


def _dloss_dlogits(logp, capped, t):
    """d (-log p(t)) / d logits = softmax - onehot (times the cap's tanh derivative), in place over logp."""
    grad = logp.exp_()
    grad[torch.arange(len(t)), t] -= 1.0
    if capped is not None:
        grad.mul_(1.0 - capped * capped)
    return grad


class _ChunkedHeadLogp(torch.autograd.Function):
    """Per-row log-probs through the output layer without holding (N, vocab) logits."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, cap, need):
        need_h, need_w = need
        out = hidden.new_empty(hidden.shape[0], dtype=torch.float32)
        grad_h = torch.empty_like(hidden) if need_h else None
        for start in range(0, hidden.shape[0], chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            logp, capped = _chunk_logp(h, weight, cap)
            out[start:start + chunk] = logp.gather(1, t[:, None]).squeeze(1)
            if need_h:  # d log p(t) / d logits = -(softmax - onehot)
                grad_h[start:start + chunk] = _dloss_dlogits(logp, capped, t).neg_().to(weight.dtype) @ weight
        ctx.save_for_backward(grad_h, hidden if need_w else None, weight if need_w else None, targets)
        ctx.chunk, ctx.cap = chunk, cap
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, hidden, weight, targets = ctx.saved_tensors
        dh = grad_h * grad_out[:, None].to(grad_h.dtype) if grad_h is not None else None
        dw = None
        if weight is not None:  # the head trains: recompute each chunk's softmax, scaled per row
            dw = torch.zeros_like(weight, dtype=torch.float32)
            for start in range(0, hidden.shape[0], ctx.chunk):
                h, t = hidden[start:start + ctx.chunk], targets[start:start + ctx.chunk]
                grad = _dloss_dlogits(*_chunk_logp(h, weight, ctx.cap), t).neg_() * grad_out[start:start + ctx.chunk, None]
                dw += grad.t() @ h.float()
            dw = dw.to(weight.dtype)
        return dh, dw, None, None, None, None


def head_logits(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """lm_head on selected hidden states, with Gemma's final logit soft-capping if configured."""
    logits = lm.get_output_embeddings()(hidden).float()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits
