"""Prefix caching: full KV blocks of prompt tokens are shared between requests with the same prefix.

A block is identified by a hash chain: the key of block i is (node id of block i-1, the block's token ids),
and each cached block gets a fresh node id that is never reused. Equal keys therefore mean the same tokens
at the same positions after the same prefix, so the block's K/V are the same; no hash collision can alias
two prefixes (the key holds the tokens themselves, not a digest of them).

Blocks are refcounted. A cached block that no request holds any more stays cached and *evictable*
(least recently used first); the allocator takes evictable blocks only when its free list is empty, so a
shared system prompt survives between requests. Only full blocks inside the prompt are cached: they are
never written again (a request writes only at positions >= num_computed_tokens, past its cached prefix).

The scheduler uses three calls: `acquire_prefix` when a request is admitted (or recomputes after a
preemption), `cache_prompt` after its prompt chunks ran, and `free` when it ends. Hit rate counts prompt
tokens served from cache over prompt tokens looked up.
"""
from __future__ import annotations

from collections import OrderedDict

from sliceserve.core.kv_cache import KVBlockAllocator

_ROOT = 0   # node id of "no parent"


class PrefixCachingAllocator(KVBlockAllocator):
    def __init__(self, num_blocks: int, block_size: int) -> None:
        super().__init__(num_blocks, block_size)
        self._key_to_block: dict[tuple[int, tuple[int, ...]], int] = {}
        self._block_key: dict[int, tuple[int, tuple[int, ...]]] = {}
        self._block_node: dict[int, int] = {}      # cached block -> its node id (parent of the next block)
        self._refs: dict[int, int] = {}            # cached block -> requests holding it
        self._evictable: OrderedDict[int, None] = OrderedDict()   # cached, unreferenced; LRU first
        self._next_node = 1
        self._num_cached: dict[str, int] = {}      # req_id -> leading blocks of its table that are cached
        self.lookup_tokens = 0
        self.hit_tokens = 0

    # --- queries -------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        return len(self._block_key)

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0

    def can_allocate(self, req_id: str, num_tokens: int, reserve: int = 0) -> bool:
        return self.blocks_needed(req_id, num_tokens) + reserve <= self.num_free_blocks

    # --- prefix reuse ----------------------------------------------------------------------------------
    def acquire_prefix(self, req_id: str, token_ids: list[int], max_tokens: int) -> int:
        """Point a request that holds no blocks at the cached blocks of its longest cached prefix, at most
        `max_tokens` tokens (callers pass num_tokens - 1 so at least one token is computed: the last
        position's logits are needed to sample). Returns the number of tokens now cached for it."""
        if self._tables.get(req_id):
            raise AssertionError(f"{req_id} already holds KV blocks")
        bs = self.block_size
        limit = min(max_tokens, len(token_ids)) // bs
        table: list[int] = []
        parent = _ROOT
        for i in range(limit):
            block = self._key_to_block.get((parent, tuple(token_ids[i * bs:(i + 1) * bs])))
            if block is None:
                break
            table.append(block)
            parent = self._block_node[block]
        self.lookup_tokens += min(len(token_ids), max_tokens)
        self.hit_tokens += len(table) * bs
        for block in table:
            self._ref(block)
        if table:
            self._tables[req_id] = table
            self._num_cached[req_id] = len(table)
        return len(table) * bs

    def cache_prompt(self, req_id: str, prompt_token_ids: list[int], num_computed_tokens: int) -> None:
        """Register the request's computed full prompt blocks so later requests can share them."""
        table = self._tables.get(req_id)
        if not table:
            return
        bs = self.block_size
        full = min(num_computed_tokens, len(prompt_token_ids)) // bs
        start = self._num_cached.get(req_id, 0)
        if full <= start:
            return
        parent = self._block_node[table[start - 1]] if start else _ROOT
        for i in range(start, full):
            key = (parent, tuple(prompt_token_ids[i * bs:(i + 1) * bs]))
            existing = self._key_to_block.get(key)
            if existing is not None and existing != table[i]:
                # Computed twice concurrently: keep the first copy; this request's stays private, and so
                # must every later block of it (their chain runs through a private block).
                self._num_cached[req_id] = i
                return
            self._key_to_block[key] = table[i]
            self._block_key[table[i]] = key
            self._block_node[table[i]] = node = self._next_node
            self._next_node += 1
            self._refs[table[i]] = 1
            parent = node
        self._num_cached[req_id] = full

    # --- allocation ----------------------------------------------------------------------------------
    def allocate(self, req_id: str, num_tokens: int) -> bool:
        table = self._tables.get(req_id)
        need = self.blocks_for(num_tokens) - (len(table) if table is not None else 0)
        if need <= 0:
            return True
        if need > self.num_free_blocks:
            return False
        while len(self._free) < need:
            self._evict_one()
        return super().allocate(req_id, num_tokens)

    def free(self, req_id: str) -> int:
        table = self._tables.pop(req_id, None)
        cached = self._num_cached.pop(req_id, 0)
        if not table:
            return 0
        for block in table[:cached]:
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._evictable[block] = None      # newest at the end: evicted last
        self._free.extend(reversed(table[cached:]))
        return len(table)

    def _ref(self, block: int) -> None:
        self._refs[block] = self._refs.get(block, 0) + 1
        self._evictable.pop(block, None)

    def _evict_one(self) -> None:
        block, _ = self._evictable.popitem(last=False)
        key = self._block_key.pop(block)
        del self._key_to_block[key]
        del self._block_node[block]
        del self._refs[block]
        self._free.append(block)
