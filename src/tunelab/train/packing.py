"""Micro-batches without padding: pack examples into one row, or bucket them by length.

A packed row concatenates several examples; position ids restart at 0 for each one.
With no 2D attention mask, transformers reads those restarts as sequence boundaries
and builds a block-diagonal causal mask (sdpa/eager) or varlen calls (flash), so no
example attends to another:

    tokens    a0 a1 a2 | b0 b1 | c0 c1 c2 c3
    positions  0  1  2 |  0  1 |  0  1  2  3

The plan (which examples go in which micro-batch, in which step) is a pure function of
the examples, the seed and the epoch, which is what makes resume exact.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from tunelab.data.tokenize import IGNORE


@dataclasses.dataclass
class MicroBatch:
    """Indices of the examples in one micro-batch and how they are laid out."""

    indices: list[int]
    packed: bool
    rows: list[list[int]] | None = None  # packed: example indices per row

    def tokens(self, lengths: Sequence[int]) -> int:
        """Tokens computed for this micro-batch, padding included."""
        groups = self.rows if self.packed and self.rows else [[i] for i in self.indices]
        sizes = [sum(lengths[i] for i in g) for g in groups]
        return max(sizes) * len(sizes)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A seeded permutation of range(n), different per epoch and identical on resume."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def pack_greedy(order: Sequence[int], lengths: Sequence[int], budget: int, rows_per_batch: int = 1
                ) -> list[MicroBatch]:
    """Rows of at most `budget` tokens filled with examples in `order`, `rows_per_batch` rows a batch.

    Rows stay at most one cutoff long because attention cost grows with the square of the
    row length (a block-diagonal mask still computes the masked blocks on sdpa).
    """
    rows: list[list[int]] = []
    row: list[int] = []
    used = 0
    for i in order:
        if row and used + lengths[i] > budget:
            rows.append(row)
            row, used = [], 0
        row.append(i)
        used += lengths[i]
    if row:
        rows.append(row)
    groups = [rows[j:j + rows_per_batch] for j in range(0, len(rows), rows_per_batch)]
    return [MicroBatch([i for r in g for i in r], packed=True, rows=g) for g in groups]


def bucket_by_length(
    order: Sequence[int], lengths: Sequence[int], size: int, seed: int = 0
) -> list[MicroBatch]:
    """Batches of `size` examples with similar lengths, so padding stays near zero.

    Sorting happens inside windows of 64 batches: near-equal lengths per batch, while the
    batch order stays random.
    """
    window = size * 64
    batches: list[MicroBatch] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [MicroBatch(chunk[j:j + size], packed=False) for j in range(0, len(chunk), size)]
    random.Random(seed).shuffle(batches)
    return batches


def plan_epoch(
    lengths: Sequence[int], micro_batch_size: int, cutoff_len: int, packing: bool, seed: int, epoch: int
) -> list[MicroBatch]:
    """All micro-batches of one epoch, in training order."""
    order = epoch_order(len(lengths), seed, epoch)
    if packing:
        return pack_greedy(order, lengths, cutoff_len, rows_per_batch=micro_batch_size)
    return bucket_by_length(order, lengths, micro_batch_size, seed=seed * 31 + epoch)


def example_tokens(example) -> int:
    """Tokens an example costs per epoch: its sequence, or a preference example's rows."""
    ids = getattr(example, "input_ids", None)
    return len(ids) if ids is not None else len(example)


def collate(batch: MicroBatch, examples: Sequence, pad_id: int = 0) -> dict:
    """Tensors for one micro-batch: input_ids, labels, position_ids (padding is on the right)."""
    import torch

    from tunelab.data.tokenize import PreferenceExample

    if isinstance(examples[batch.indices[0]], PreferenceExample):  # chosen + rejected rows (train/pairs.py)
        from tunelab.train.pairs import collate_preference

        return collate_preference(batch.indices, examples, pad_id)
    from tunelab.data.prompts import PromptExample

    if isinstance(examples[batch.indices[0]], PromptExample):  # GRPO: rollouts come in the forward (train/grpo.py)
        from tunelab.train.grpo import collate_prompts

        return collate_prompts(batch.indices, examples)

    if batch.packed:
        rows = [_packed_row([examples[i] for i in r]) for r in (batch.rows or [batch.indices])]
        width = max(len(ids) for ids, _, _ in rows)
        # padding becomes its own segment (positions restart at 0) with no labels: it touches nothing
        pad = [width - len(ids) for ids, _, _ in rows]
        return {
            "input_ids": torch.tensor([ids + [pad_id] * p for (ids, _, _), p in zip(rows, pad)]),  # (R, T)
            "labels": torch.tensor([lab + [IGNORE] * p for (_, lab, _), p in zip(rows, pad)]),
            "position_ids": torch.tensor([pos + list(range(p)) for (_, _, pos), p in zip(rows, pad)]),
        }
    items = [examples[i] for i in batch.indices]
    width = max(len(ex.input_ids) for ex in items)
    pad = [width - len(ex.input_ids) for ex in items]
    if any(getattr(ex, "images", None) for ex in items):
        return _with_images(items, width, pad, pad_id)
    return {
        "input_ids": torch.tensor([ex.input_ids + [pad_id] * p for ex, p in zip(items, pad)]),  # (B, T)
        "labels": torch.tensor([_shifted(ex.labels) + [IGNORE] * p for ex, p in zip(items, pad)]),
        # right padding only, and no attention mask: under causal attention a real token never
        # sees the pads after it, and without a mask sdpa takes its fused is_causal kernel
        "position_ids": torch.tensor([list(range(width))] * len(items)),
    }


def _with_images(items: Sequence, width: int, pad: list[int], pad_id: int) -> dict:
    """A VLM micro-batch: ids, labels, the images' pixels and which tokens are image tokens; no position
    ids, since the model computes its M-RoPE positions from those and the image grid (vision/training.py)."""
    import torch

    from tunelab.vision.training import vision_batch

    refs = [ref for ex in items for ref in ex.images or []]
    ids = torch.tensor([ex.input_ids + [pad_id] * p for ex, p in zip(items, pad)])  # (B, T)
    return {
        "input_ids": ids,
        "labels": torch.tensor([_shifted(ex.labels) + [IGNORE] * p for ex, p in zip(items, pad)]),
        **vision_batch(refs, next(ex.vision_dir for ex in items if ex.images), ids),
    }


def _packed_row(items: Sequence) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, shifted labels, position ids restarting per example) of one packed row."""
    ids = [t for ex in items for t in ex.input_ids]
    labels = [t for ex in items for t in _shifted(ex.labels)]
    pos = [p for ex in items for p in range(len(ex.input_ids))]
    return ids, labels, pos


def _shifted(labels: Sequence[int]) -> list[int]:
    """Labels moved one left, so position t carries the target for token t+1.

    Shifting per example (before packing) is what keeps the last token of one example
    from being trained to predict the first token of the next.
    """
    return list(labels[1:]) + [IGNORE]
