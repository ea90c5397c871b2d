"""The model runner: owns the device, the weights and the KV cache; runs one scheduled batch.

A step lays the scheduled tokens out flat (no padding), one chunk per sequence:

    input_ids  [s0 t5 t6 t7 | s1 t42 | s2 t9]     positions  [5 6 7 | 42 | 9]
    slot_mapping: where each token's k/v goes      sample rows: last row of s0, s1, s2

Tokens whose KV came from the prefix cache are never in the batch (the scheduler starts a
sequence's chunk at `num_computed_tokens`). Logits are computed only for the rows that
sample, which matters when the lm_head is 262k x 640 (Gemma 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.engine import greedy_head, multimodal, prompt_logprobs
from tunelab.engine.kv_cache import KVCache
from tunelab.models.attention import AttnBatch, PrefillSegment


@dataclass
class StepInputs:
    """Tensors for one forward pass, built from a scheduler Batch."""

    input_ids: torch.Tensor  # (T,)
    attn: AttnBatch
    sample_rows: torch.Tensor  # (N,) rows whose hidden state becomes logits
    adapter_rows: list[tuple[str | None, int, int]]  # (adapter, start, length) per item
    prompt: prompt_logprobs.PromptRows | None = None  # rows whose logprobs the prompt asked for
    images: multimodal.ImagePlan | None = None  # rows that take image embeddings (VLM prefill)


class ModelRunner:
    """Runs batches through `model` over `kv`, returning logits of the sampling rows."""

    def __init__(self, model, kv: KVCache, device: torch.device, lora=None):
        self.model = model
        self.kv = kv
        self.device = device
        self.lora = lora  # engine.lora.LoRAManager or None
        self.decode_kernel = device.type == "cuda" and _triton_available()
        self.graphs = None  # engine.cuda_graphs.DecodeGraphs, set by the engine on CUDA
        self.greedy_head = None  # engine.greedy_head.GreedyHead: greedy-only steps take their argmax from it

    def enable_graphs(self, max_batch: int, max_blocks: int, capture: bool = True) -> None:
        """Serve decode-only steps from CUDA graphs (or, capture=False, their static buffers)."""
        from tunelab.engine.cuda_graphs import DecodeGraphs

        self.decode_kernel = True
        self.graphs = DecodeGraphs(self.model, self.kv, max_batch, max_blocks, self.device, capture)

    def prepare(self, items) -> StepInputs:
        """Flatten `items` into device tensors. The engine calls this under its lock: once it
        returns, an abort may free the sequences' block tables without disturbing the step."""
        return prepare_inputs(items, self.kv.block_size, self.device, self.decode_kernel)

    @torch.inference_mode()
    def execute(self, items, inputs: StepInputs | None = None) -> torch.Tensor:
        """Forward the scheduled `items` (ScheduledItem-like); fp32 logits (N, vocab) for samplers."""
        step = inputs or self.prepare(items)
        if self.graphs is not None and step.images is None and self.graphs.fits(step):
            hidden = self.graphs.forward(step)  # (B, hidden), rows in step order
        else:
            hidden = self.hidden_states(step)  # (T, hidden)
        patch = self.lora.logits_patch(step.adapter_rows) if self.lora is not None else None
        if step.prompt:  # the sampled rows' logits come out of its last lm_head pass
            logits = prompt_logprobs.collect(self.model, hidden, step.prompt, step.sample_rows)
        elif patch is None and self.greedy_head is not None and greedy_head.eligible(it.seq for it in items) \
                and self.greedy_head.serves(self.model):
            return self.greedy_head.logits(hidden[step.sample_rows])  # exact where it can be the argmax
        else:
            logits = self.model.compute_logits(hidden[step.sample_rows])
        if patch is not None:  # an adapter's trained token rows are its own output rows too
            patch(logits, hidden[step.sample_rows], step.sample_rows)
        return logits

    @torch.inference_mode()
    def hidden_states(self, step: StepInputs) -> torch.Tensor:
        """Final (normed) hidden states (T, hidden) of every row, eagerly: the embedding path."""
        if self.lora is not None:
            self.lora.set_batch(step.adapter_rows, step.input_ids.shape[0], self.device)
        if step.images is not None:
            return self.model(step.input_ids, step.attn, self.kv.layers, images=step.images.rows_for(self.model))
        return self.model(step.input_ids, step.attn, self.kv.layers)

    @torch.inference_mode()
    def step(self, batch, sample_fn, inputs: StepInputs | None = None) -> tuple[list[int], list | None]:
        """Run a scheduler Batch and sample one token per sampling item with `sample_fn`."""
        logits = self.execute(batch.items, inputs)
        seqs = batch.sample_seqs
        if not seqs:
            return [], None
        out = sample_fn(logits, seqs)
        return out.token_ids.tolist(), out.logprobs


def prepare_inputs(items, block_size: int, device: torch.device, decode_kernel: bool = False) -> StepInputs:
    """Flatten the scheduled chunks into ids, positions, slots and per-sequence attention plans;
    `decode_kernel` sends decode rows to the Triton kernel (block tables) instead of a gather."""
    ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    sample_rows: list[int] = []
    adapters: list[tuple[str | None, int, int]] = []
    decodes: list[tuple[int, object, int]] = []  # (row, seq, context length)
    prefills: list[tuple[int, object, int, int]] = []  # (row, seq, q_len, context length)
    prompt = prompt_logprobs.PromptRows()
    for item in items:
        seq, start, n = item.seq, item.start_pos, item.num_tokens
        row = len(ids)
        ids.extend(item.token_ids)  # a drafted item feeds its guesses after the last known token
        positions.extend(multimodal.rope_positions(seq, start, n))  # M-RoPE shifts a VLM's text positions
        table = seq.block_table
        slots.extend(table[p // block_size] * block_size + p % block_size for p in range(start, start + n))
        (decodes.append((row, seq, start + 1)) if n == 1 else prefills.append((row, seq, n, start + n)))
        sample_rows.extend(range(row + n - item.num_samples, row + n))
        adapters.append((getattr(seq, "adapter", None), row, n))
        prompt_logprobs.plan_rows(prompt, seq, start, n, row)
    attn = AttnBatch(
        positions=torch.tensor(positions, dtype=torch.long, device=device),
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
    )
    _plan_prefills(attn, prefills, block_size, device)
    _plan_decodes(attn, decodes, block_size, device, decode_kernel)
    return StepInputs(
        input_ids=torch.tensor(ids, dtype=torch.long, device=device),
        attn=attn,
        sample_rows=torch.tensor(sample_rows, dtype=torch.long, device=device),
        adapter_rows=adapters,
        prompt=prompt or None,
        images=multimodal.plan_images(items, positions, device),
    )


def _context_slots(block_table: list[int], ctx: int, block_size: int) -> torch.Tensor:
    """Cache slots of positions [0, ctx) of a sequence, from its block table."""
    nb = -(-ctx // block_size)
    table = torch.tensor(block_table[:nb], dtype=torch.long)
    return (table[:, None] * block_size + torch.arange(block_size)).flatten()[:ctx]


def _plan_prefills(attn: AttnBatch, prefills, block_size: int, device) -> None:
    for row, seq, q_len, ctx in prefills:
        slots = _context_slots(seq.block_table, ctx, block_size).to(device)
        attn.prefills.append(PrefillSegment(row, q_len, slots, multimodal.image_blocks(seq, ctx)))


def _plan_decodes(attn: AttnBatch, decodes, block_size: int, device, kernel: bool) -> None:
    """Padded (B, max_blocks) block tables so all decode queries attend in a single call; the
    gather path expands them to a (B, Cmax) slot matrix."""
    if not decodes:
        return
    nbs = [-(-ctx // block_size) for _, _, ctx in decodes]
    width = max(nbs)
    table = torch.tensor([seq.block_table[:nb] + [0] * (width - nb) for (_, seq, _), nb in zip(decodes, nbs)],
                         dtype=torch.int32)  # one tensor for the batch, not one per sequence
    lens = [ctx for _, _, ctx in decodes]
    attn.decode_rows = torch.tensor([r for r, _, _ in decodes], dtype=torch.long, device=device)
    attn.decode_lens = torch.tensor(lens, dtype=torch.int32, device=device)
    attn.decode_kernel = kernel
    if kernel:
        attn.decode_tables = table.to(device)
        return
    slots = (table.long()[:, :, None] * block_size + torch.arange(block_size)).view(len(decodes), -1)
    attn.decode_slots = slots[:, :max(lens)].to(device)


def _triton_available() -> bool:
    from tunelab.models import triton_attention

    return triton_attention.available()
