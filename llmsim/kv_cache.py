"""Paged KV block pool with vLLM-style prefix caching (chained block hashes, ref counts, LRU free list)."""
from collections import OrderedDict, deque

from .request import Request

HASH_SEED = 0x9E3779B97F4A7C15


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.caching = enable_prefix_caching
        # Free blocks in eviction order; freed blocks go to the tail so a finished request's
        # head blocks (the likeliest shared prefix) survive longest. Blocks never handed out
        # (ids _fresh..num_blocks-1) are the list's implicit head, so a pool costs memory for the
        # blocks it has used, not for its size. Until the first block is hashed nothing can be
        # shared or evicted, so a deque (bulk, C-speed) holds the returned blocks and reference
        # counts are not kept; _start_hashing() switches to the full structure.
        self._fresh = 0
        self._free: deque[int] | OrderedDict[int, None] = deque()
        self._hashing = False
        self._ref: list[int] = []  # by block id, for ids below _fresh (once hashing)
        self._hash_of: dict[int, int] = {}
        self._block_of: dict[int, int] = {}
        self._free_hashed = 0  # free blocks still carrying a hash (count as used memory)

    @property
    def num_free(self) -> int:
        return self.num_blocks - self._fresh + len(self._free)

    @property
    def num_used(self) -> int:
        """Blocks holding KV: referenced ones plus freed ones that still carry a reusable hash."""
        return self._fresh - len(self._free) + self._free_hashed

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold `tokens` tokens (the one block ceiling)."""
        return -(-tokens // self.block_size)

    def blocks_short(self, req: Request, tokens: int) -> int:
        """Blocks req must still take to hold `tokens` tokens (0 when it holds enough)."""
        n = -(-tokens // self.block_size) - len(req.blocks)
        return n if n > 0 else 0

    # -- prefix cache -------------------------------------------------------------------------
    def _chain(self, req: Request, n: int) -> list[int]:
        """The request's chained block hashes, extended lazily to n blocks."""
        hashes = req.block_hashes
        bs = self.block_size
        h = hashes[-1] if hashes else HASH_SEED
        for i in range(len(hashes), n):
            h = hash((h, req.token_ids[i * bs:(i + 1) * bs]))
            hashes.append(h)
        return hashes

    def lookup(self, req: Request) -> list[int]:
        """Cached blocks for the longest hashed prefix; at least one token is always recomputed."""
        if not self.caching or req.token_ids is None:
            return []
        limit = min((req.num_tokens - 1) // self.block_size, len(req.token_ids) // self.block_size)
        hits = []
        for h in self._chain(req, limit)[:limit]:
            b = self._block_of.get(h)
            if b is None:
                break
            hits.append(b)
        return hits

    def _start_hashing(self) -> None:
        self._free = OrderedDict.fromkeys(self._free)
        self._ref = [1] * self._fresh  # every block handed out and not returned is held once
        for b in self._free:
            self._ref[b] = 0
        self._hashing = True

    def _index(self, req: Request, upto_tokens: int) -> None:
        if not self.caching or req.token_ids is None:
            return
        if not self._hashing:
            self._start_hashing()
        full = min(upto_tokens, len(req.token_ids)) // self.block_size
        if req.num_hashed_blocks >= full:
            return
        hashes = self._chain(req, full)
        for i in range(req.num_hashed_blocks, min(full, len(req.blocks))):
            h, b = hashes[i], req.blocks[i]
            # A block computed twice concurrently keeps the first mapping, as vLLM does.
            if h not in self._block_of and b not in self._hash_of:
                self._hash_of[b] = h
                self._block_of[h] = b
        req.num_hashed_blocks = max(req.num_hashed_blocks, min(full, len(req.blocks)))

    # -- allocation -----------------------------------------------------------------------------
    def can_fit(self, tokens: int, hits: list[int], held: int) -> bool:
        need = self.blocks_for(tokens) - held - len(hits)
        return max(need, 0) + sum(1 for b in hits if self._ref[b] == 0) <= self.num_free

    def allocate(self, req: Request, num_new: int, hits: list[int] = ()) -> bool:
        """Slots for num_new more tokens (after req.num_computed, which includes hits). No change on failure."""
        total = req.num_computed + num_new
        if not hits and total <= len(req.blocks) * self.block_size:  # decode within its last block
            if self.caching and req.token_ids is not None:
                self._index(req, min(total, req.num_tokens))
            return True
        if not self.can_fit(total, hits, len(req.blocks)):
            return False
        for b in hits:
            if self._ref[b] == 0:
                del self._free[b]
                self._free_hashed -= 1
            self._ref[b] += 1
            req.blocks.append(b)
        if hits:
            req.num_hashed_blocks = len(req.blocks)
        req.blocks += self.take(self.blocks_for(total) - len(req.blocks))
        self._index(req, min(total, req.num_tokens))
        return True

    def take(self, n: int) -> list[int]:
        """n blocks from the head of the free list (evicting their cached hashes), referenced once.
        The caller has checked n <= num_free."""
        out = []
        fresh = self.num_blocks - self._fresh
        if fresh:
            k = n if n < fresh else fresh
            out = list(range(self._fresh, self._fresh + k))
            self._fresh += k
            if self._hashing:
                self._ref += [1] * k
            n -= k
            if not n:
                return out
        free = self._free
        if not self._hashing:
            pop = free.popleft
            out += [pop() for _ in range(n)]
            return out
        hash_of, ref = self._hash_of, self._ref
        for _ in range(n):
            b, _ = free.popitem(last=False)
            old = hash_of.pop(b, None)
            if old is not None:
                del self._block_of[old]
                self._free_hashed -= 1
            ref[b] = 1
            out.append(b)
        return out

    def grow(self, req: Request, n: int) -> None:
        """Give req n more blocks from the free list (the caller has checked n <= num_free)."""
        req.blocks += self.take(n)

    def assign(self, req: Request, blocks: list[int]) -> None:
        """Hand req blocks taken earlier with take() (a decode lane's reservoir)."""
        req.blocks += blocks

    def index_upto(self, req: Request, tokens: int) -> None:
        """Hash the request's blocks filled by its first `tokens` tokens (what a decode step's
        allocate() does; the caller passes min(computed + new, tokens so far))."""
        self._index(req, tokens)

    def index(self, req: Request) -> None:
        self._index(req, min(req.num_computed, req.num_tokens))

    def free(self, req: Request) -> None:
        if not self._hashing:
            self._free.extend(reversed(req.blocks))
        else:
            for b in reversed(req.blocks):
                self._ref[b] -= 1
                if self._ref[b] == 0:
                    self._free[b] = None
                    self._free_hashed += b in self._hash_of
        req.blocks = []
        req.num_hashed_blocks = 0
