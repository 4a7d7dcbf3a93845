"""Encoded media kept in memory, so that asking a file a second question costs only the LLM.

The caller names each input's features with an opaque, hashable `MultimodalInput.feature_key` (the
tasks layer uses the file's stamp, the model, the frame count and the modality); the model only
looks keys up. Entries live in this process's memory (on the model's device) and are never written
to disk; the least recently used entry goes first once `max_entries` are held.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import torch


class FeatureCache:
    """A bounded least-recently-used map of feature key -> feature block (M, C)."""

    def __init__(self, max_entries: int | None = None) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError("max_entries must be at least 1 (or None: unbounded)")
        self.max_entries = max_entries
        self._blocks: OrderedDict[Hashable, torch.Tensor | None] = OrderedDict()
        #: lookups answered from the cache, and blocks stored (each one an encoder run)
        self.hits = 0
        self.misses = 0
        self.stored = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, key: Hashable) -> torch.Tensor | None:
        """The block stored under `key` (counted as a hit), or None (a miss)."""
        if key not in self._blocks:
            self.misses += 1
            return None
        self.hits += 1
        self._blocks.move_to_end(key)
        return self._blocks[key]

    def put(self, key: Hashable, block: torch.Tensor | None) -> None:
        self.stored += 1
        self._blocks[key] = block
        self._blocks.move_to_end(key)
        while self.max_entries is not None and len(self._blocks) > self.max_entries:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        self._blocks.clear()
