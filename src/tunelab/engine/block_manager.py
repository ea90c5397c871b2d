"""Paged KV cache bookkeeping: fixed-size blocks, ref counts and prefix caching. No torch.

The cache is `num_blocks` blocks of `block_size` token slots. Token position `pos` of a
sequence lives in slot `block_table[pos // block_size] * block_size + pos % block_size`.

Prefix caching: once a block is full and its KV computed, it gets a hash chained from
its predecessor's, `hash((parent_hash, key, tokens))` (key: the adapter and the content hash of
any image with tokens in the block, `Sequence.block_key`), so equal hashes mean equal
prefixes (the tokens are compared too, to rule out collisions). A new sequence whose
leading full blocks hash the same reuses those blocks and bumps their ref counts.
Freed blocks keep their hash while on the free list, so a later request can revive
them; they are evicted least-recently-freed first, and a sequence's tail is freed
before its head so shared prefixes outlive their suffixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.engine.sequence import Sequence


@dataclass
class Block:
    """One KV cache block: who uses it and, once full and computed, what it holds."""

    block_id: int
    ref_count: int = 0
    hash: int | None = None
    tokens: tuple[int, ...] = ()


class BlockManager:
    """Hands out KV cache blocks to sequences; shares full prefix blocks between them."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks and block_size must be positive, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: dict[int, None] = dict.fromkeys(range(num_blocks))  # ordered set, oldest first
        self._cached: dict[int, int] = {}  # block hash -> block id

    @property
    def num_free(self) -> int:
        """Blocks not used by any sequence (cached-but-unused blocks count as free)."""
        return len(self._free)

    def usage(self) -> float:
        """Fraction of blocks in use by sequences, 0.0 to 1.0."""
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    def match_prefix(self, seq: Sequence) -> list[int]:
        """Ids of cached blocks equal to the leading full blocks of a seq with no blocks yet.

        At most (num_tokens - 1) // block_size blocks match, so at least one token is
        left to compute: the model must run on the last token to produce logits.
        """
        if not self.enable_prefix_caching or seq.block_table:
            return []
        hits: list[int] = []
        parent = None
        for j in range((seq.num_tokens - 1) // self.block_size):
            tokens = tuple(seq.token_ids[j * self.block_size:(j + 1) * self.block_size])
            parent = _chain_hash(parent, seq.block_key(j, self.block_size), tokens)
            block_id = self._cached.get(parent)
            if block_id is None or self.blocks[block_id].tokens != tokens:
                break
            hits.append(block_id)
        return hits

    def fit(self, seq: Sequence, hits: list[int] = ()) -> int:
        """How many new tokens (after the computed ones and `hits`) could get slots now."""
        held = max(len(seq.block_table), len(hits))
        revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        start = max(seq.num_computed_tokens, len(hits) * self.block_size)
        return (held + self.num_free - revived) * self.block_size - start

    def allocate(self, seq: Sequence, num_tokens: int, hits: list[int] = ()) -> None:
        """Give `seq` slots for its next `num_tokens` tokens, reusing `hits` first.

        `hits` (from match_prefix) only applies to a sequence without blocks; it sets
        num_cached_tokens = num_computed_tokens = len(hits) * block_size. Call `fit`
        first: asking for more than fits raises RuntimeError and changes nothing.
        """
        if num_tokens > self.fit(seq, hits):
            raise RuntimeError(f"{num_tokens} tokens do not fit in {self.num_free} free blocks")
        if hits:
            self._take_hits(seq, hits)
        needed = self.blocks_for(seq.num_computed_tokens + num_tokens) - len(seq.block_table)
        for _ in range(needed):
            seq.block_table.append(self._pop_free())

    def commit(self, seq: Sequence) -> None:
        """Register the full blocks whose KV is now computed, so later requests can reuse them."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        for j in range(len(seq.block_hashes), seq.num_computed_tokens // bs):
            tokens = tuple(seq.token_ids[j * bs:(j + 1) * bs])
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            h = _chain_hash(parent, seq.block_key(j, bs), tokens)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[j]]
            if h not in self._cached:  # an equal block computed by another seq stays the canonical one
                self._cached[h] = block.block_id
                block.hash, block.tokens = h, tokens

    def free(self, seq: Sequence) -> None:
        """Release all of `seq`'s blocks, tail first; shared blocks live on for other users."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
        seq.block_table = []
        seq.block_hashes = []

    def reset_prefix_cache(self) -> None:
        """Forget every cached hash (e.g. an adapter was reloaded under the same name)."""
        self._cached.clear()
        for block in self.blocks:
            block.hash, block.tokens = None, ()

    def _take_hits(self, seq: Sequence, hits: list[int]) -> None:
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            seq.block_hashes.append(block.hash)
        seq.num_cached_tokens = seq.num_computed_tokens = len(hits) * self.block_size

    def _pop_free(self) -> int:
        block_id = next(iter(self._free))
        del self._free[block_id]
        block = self.blocks[block_id]
        if block.hash is not None and self._cached.get(block.hash) == block_id:
            del self._cached[block.hash]  # evict: its contents are about to be overwritten
        block.hash, block.tokens, block.ref_count = None, (), 1
        return block_id


def _chain_hash(parent: int | None, key: tuple, tokens: tuple[int, ...]) -> int:
    # The key holds the adapter (the same tokens under another LoRA give other KV) and the images
    # whose rows the block's image tokens took (the same ids with another image give other KV).
    return hash((parent, key, tokens))
