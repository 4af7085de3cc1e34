"""KV block allocator: fixed-size blocks of `block_size` tokens, a block table per request."""
from __future__ import annotations


class KVBlockAllocator:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("KV cache needs a positive number of blocks and a positive block size")
        self.num_blocks = num_blocks
        self.block_size = block_size
        # Pop from the end: low block ids are handed out first, which keeps tests readable.
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._tables: dict[str, list[int]] = {}

    # --- queries -------------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def num_blocks_held(self, req_id: str) -> int:
        table = self._tables.get(req_id)
        return len(table) if table else 0

    def blocks_needed(self, req_id: str, num_tokens: int) -> int:
        """Extra blocks `req_id` needs to hold `num_tokens` tokens in total."""
        return max(0, self.blocks_for(num_tokens) - self.num_blocks_held(req_id))

    def can_allocate(self, req_id: str, num_tokens: int, reserve: int = 0) -> bool:
        """Whether `req_id` can grow to `num_tokens` tokens while leaving `reserve` blocks free."""
        return self.blocks_needed(req_id, num_tokens) + reserve <= len(self._free)

    def block_table(self, req_id: str) -> list[int]:
        return self._tables.get(req_id, [])

    # --- changes -------------------------------------------------------------------------------------
    def allocate(self, req_id: str, num_tokens: int) -> bool:
        """Grow `req_id`'s table to hold `num_tokens` tokens. All or nothing; False if memory is short."""
        # Hot path (every scheduled request, every iteration): usually the table already suffices.
        table = self._tables.get(req_id)
        need = -(-num_tokens // self.block_size) - (len(table) if table is not None else 0)
        if need <= 0:
            return True
        free = self._free
        if need > len(free):
            return False
        if table is None:
            table = self._tables[req_id] = []
        if need == 1:
            table.append(free.pop())
        else:
            table.extend(reversed(free[-need:]))  # same order as popping one by one
            del free[-need:]
        return True

    def tables(self) -> dict[str, list[int]]:
        """Every request's block table (read-only use: executors and the scheduler's output view)."""
        return self._tables

    def append(self, req_id: str, num_new_tokens: int, num_current_tokens: int) -> bool:
        """Room for `num_new_tokens` more tokens after the `num_current_tokens` the request holds."""
        return self.allocate(req_id, num_current_tokens + num_new_tokens)

    def free(self, req_id: str) -> int:
        """Return every block of `req_id` to the pool; returns how many."""
        table = self._tables.pop(req_id, None)
        if not table:
            return 0
        self._free.extend(reversed(table))
        return len(table)
