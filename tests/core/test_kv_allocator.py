import pytest

from sliceserve.core.kv_cache import KVBlockAllocator


def test_allocate_rounds_up_to_blocks_and_grows():
    kv = KVBlockAllocator(num_blocks=8, block_size=4)
    assert kv.blocks_for(1) == 1 and kv.blocks_for(4) == 1 and kv.blocks_for(5) == 2
    assert kv.allocate("a", 5)
    assert kv.num_blocks_held("a") == 2 and kv.num_free_blocks == 6
    assert kv.allocate("a", 8)           # still two blocks
    assert kv.num_blocks_held("a") == 2
    assert kv.append("a", 1, 8)          # the ninth token needs a third block
    assert kv.num_blocks_held("a") == 3 and kv.num_used_blocks == 3
    assert kv.usage == pytest.approx(3 / 8)


def test_all_or_nothing_and_free():
    kv = KVBlockAllocator(num_blocks=4, block_size=4)
    assert kv.allocate("a", 12)
    assert not kv.can_allocate("b", 8)
    assert not kv.allocate("b", 8)       # needs 2, only 1 free: nothing taken
    assert kv.num_blocks_held("b") == 0 and kv.num_free_blocks == 1
    assert kv.can_allocate("b", 4) and not kv.can_allocate("b", 4, reserve=1)
    assert kv.free("a") == 3
    assert kv.free("a") == 0             # freeing twice is harmless
    assert kv.num_free_blocks == 4
    assert kv.allocate("b", 16)


def test_block_ids_are_never_shared():
    kv = KVBlockAllocator(num_blocks=10, block_size=2)
    for i, n in enumerate([3, 5, 4]):
        assert kv.allocate(f"r{i}", n)
    kv.free("r1")
    assert kv.allocate("r3", 7)
    ids = [b for r in ("r0", "r2", "r3") for b in kv.block_table(r)]
    assert len(ids) == len(set(ids)) == kv.num_used_blocks
    assert all(0 <= b < 10 for b in ids)


@pytest.mark.parametrize("blocks, size", [(0, 16), (16, 0), (-1, 4)])
def test_rejects_empty_cache(blocks, size):
    with pytest.raises(ValueError, match="positive"):
        KVBlockAllocator(blocks, size)
