"""The Hamming index returns exactly what brute force returns, however it is updated."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modstream.formats.hexcodes import hex_to_codes
from modstream.matching.hamming import HammingIndex, slot_radii


def brute(live: dict[int, str], query: str, radius: int) -> list[tuple[int, int]]:
    hits = [(ref, (int(code, 16) ^ int(query, 16)).bit_count()) for ref, code in live.items()]
    return sorted((h for h in hits if h[1] <= radius), key=lambda h: (h[1], h[0]))


def near(code: str, flips: int, rng: random.Random, bits: int = 256) -> str:
    value = int(code, 16)
    for bit in rng.sample(range(bits), flips):
        value ^= 1 << bit
    return f"{value:0{bits // 4}x}"


def random_codes(rng: np.random.Generator, n: int, words: int = 4) -> np.ndarray:
    return rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)


def brute_arrays(codes: np.ndarray, refs: np.ndarray, queries: np.ndarray, radius: int) -> set:
    distances = np.bitwise_count(queries[:, None, :] ^ codes[None, :, :]).sum(axis=2)
    q, pos = np.nonzero(distances <= radius)
    return set(zip(q.tolist(), refs[pos].tolist(), distances[q, pos].tolist(), strict=True))


def flip_bits(codes: np.ndarray, flips: int, rng: np.random.Generator) -> np.ndarray:
    """Copies of ``codes`` with ``flips`` distinct random bits flipped in each."""
    out = codes.copy()
    bits = codes.shape[1] * 64
    for row in out:
        for bit in rng.choice(bits, size=flips, replace=False):
            row[bit // 64] ^= np.uint64(1) << np.uint64(63 - bit % 64)
    return out


ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "query"]), st.integers(0, 40), st.integers(0, 300)),
    max_size=80,
)


@settings(max_examples=120, deadline=None)
@given(
    ops=ops,
    seed=st.integers(0, 2**32),
    bits=st.sampled_from([64, 256]),
    layout=st.sampled_from(["fast", "compact"]),
    strategy=st.sampled_from(["probe", "auto"]),
)
def test_equals_brute_force_under_interleaved_updates(ops, seed, bits, layout, strategy):
    """Tiny deltas and merge factor 2: every add freezes, segments merge, all paths run."""
    rng = random.Random(seed)
    seeds = [f"{rng.getrandbits(bits):0{bits // 4}x}" for _ in range(3)]
    index = HammingIndex(
        bits, layout=layout, delta_capacity=3, merge_factor=2, background_merges=False,
        strategy=strategy,
    )  # fmt: skip
    live: dict[int, str] = {}
    for op, ref, amount in ops:
        if op == "add":
            live[ref] = near(rng.choice(seeds), amount % (bits // 4), rng, bits)
            index.add(ref, live[ref])
        elif op == "remove":
            live.pop(ref, None)
            index.remove(ref)
        else:
            query = near(rng.choice(seeds), amount % 24, rng, bits)
            radius = min(amount, bits)
            assert index.query(query, radius) == brute(live, query, radius)
        assert len(index) == len(live)


@pytest.mark.parametrize("layout", ["fast", "compact"])
@pytest.mark.parametrize("radius", [0, 15, 31, 47, 63])
def test_large_clustered_bank_equals_brute_force(layout, radius):
    """Near-duplicate clusters and a heavily repeated substring, as in real banks."""
    rng = np.random.default_rng(radius)
    seeds = random_codes(rng, 200)
    clusters = np.concatenate([flip_bits(seeds, rng.integers(0, 31), rng) for _ in range(40)])
    common = random_codes(rng, 5000)
    common[:, 0] = np.uint64(0)  # a quarter of every hash is the same: flat images
    codes = np.concatenate([random_codes(rng, 20_000), clusters, common])
    refs = rng.permutation(len(codes)).astype(np.int64) * 3
    index = HammingIndex(256, layout=layout, background_merges=False, strategy="probe")
    index.add_many(refs, codes)
    index.compact()
    queries = np.concatenate(
        [flip_bits(seeds[:60], 12, rng), flip_bits(common[:30], 20, rng), random_codes(rng, 30)]
    )
    q, r, d = index.search(queries, radius)
    assert set(zip(q.tolist(), r.tolist(), d.tolist(), strict=True)) == brute_arrays(
        codes, refs, queries, radius
    )
    assert np.all(np.diff(q) >= 0), "hits come grouped by query"


def test_edge_cases():
    index = HammingIndex(256, background_merges=False)
    assert index.query("0" * 64, 256) == []  # empty
    index.add(1, "f" * 64)
    assert index.query("f" * 64, 0) == [(1, 0)]  # one entry
    index.add(2, "f" * 64)  # the same signal under another id
    assert index.query("f" * 64, 0) == [(1, 0), (2, 0)]
    assert index.query("0" * 64, 255) == []
    assert index.query("0" * 64, 256) == [(1, 256), (2, 256)]
    index.remove(1)
    index.remove(1)  # twice is harmless
    index.remove(99)  # never added
    assert index.query("f" * 64, 0) == [(2, 0)]
    index.add(2, "0" * 64)  # re-adding a ref replaces its signal
    assert index.query("f" * 64, 256) == [(2, 256)]
    assert len(index) == 1


def test_bank_of_identical_hashes():
    index = HammingIndex(256, delta_capacity=100, background_merges=False, strategy="probe")
    index.add_many(range(1000), hex_to_codes(["ab" * 32] * 1000, 256))
    hits = index.query("ab" * 32, 0)
    assert hits == [(ref, 0) for ref in range(1000)]
    index.remove_many(range(0, 1000, 2))
    assert [ref for ref, _ in index.query("ab" * 32, 31)] == list(range(1, 1000, 2))


def test_pigeonhole_radii_cover_the_radius():
    for slots in range(1, 20):
        for radius in range(0, 80):
            radii = slot_radii(slots, radius)
            # A code at distance radius+1 split as evenly as possible must escape every slot;
            # any split of `radius` must be caught by some slot.
            assert sum(r + 1 for r in radii) == radius + 1


def test_removals_are_live_at_once_and_memory_follows_live_entries():
    rng = np.random.default_rng(7)
    index = HammingIndex(256, delta_capacity=512, merge_factor=4)
    base = random_codes(rng, 20_000)
    index.add_many(np.arange(20_000), base)
    index.wait_for_merges()
    settled = index.nbytes()
    for round_ in range(40):  # 40 x 2,000 replaced: 4x the live size in churn
        refs = np.arange(round_ * 2000, round_ * 2000 + 2000) % 20_000
        index.remove_many(refs.tolist())
        q, _, _ = index.search(base[refs[:50]], 0)
        assert len(q) == 0, "a removed entry matched"
        index.add_many(refs, base[refs])
    index.wait_for_merges()
    assert len(index) == 20_000
    assert index.nbytes() < 3 * settled
    q, r, _ = index.search(base[:100], 0)
    assert r.tolist() == list(range(100))
    index.close()


def test_searches_on_threads_while_the_bank_changes():
    rng = np.random.default_rng(3)
    codes = random_codes(rng, 30_000)
    index = HammingIndex(256, delta_capacity=256)
    index.add_many(np.arange(10_000), codes[:10_000])
    stable = codes[:200]  # never removed: every search must find each exactly
    errors: list[str] = []

    def search() -> None:
        for _ in range(30):
            _q, r, d = index.search(stable, 0)
            if r.tolist() != list(range(200)) or d.any():
                errors.append(f"{len(r)} hits")

    readers = [threading.Thread(target=search) for _ in range(2)]
    for reader in readers:
        reader.start()
    for start in range(10_000, 30_000, 1000):
        index.add_many(np.arange(start, start + 1000), codes[start : start + 1000])
        index.remove_many(range(start - 9000, start - 8000))
    for reader in readers:
        reader.join()
    index.wait_for_merges()
    assert not errors
    live = np.concatenate([np.arange(1000), np.arange(21_000, 30_000)])
    assert len(index) == len(live)
    _q, r, _d = index.search(codes[live[::97]], 0)
    assert sorted(r.tolist()) == sorted(live[::97].tolist())
    index.close()


def test_snapshot_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    codes = random_codes(rng, 12_000)
    index = HammingIndex(256, delta_capacity=1000, background_merges=False)
    index.add_many(np.arange(12_000), codes)
    index.remove_many(range(0, 12_000, 3))
    index.add(50_000, "0" * 64)  # in the delta when saved
    index.save(tmp_path / "snap")
    loaded = HammingIndex.load(tmp_path / "snap", background_merges=False)
    assert len(loaded) == len(index)
    queries = np.concatenate([flip_bits(codes[:300], 9, rng), hex_to_codes(["0" * 64], 256)])
    for a, b in zip(index.search(queries, 31), loaded.search(queries, 31), strict=True):
        assert a.tolist() == b.tolist()
    loaded.remove(1)  # a loaded index keeps working
    assert loaded.query(f"{0:064x}", 0) == [(50_000, 0)]
    assert (1, 0) not in loaded.query("".join(f"{int(w):016x}" for w in codes[1]), 0)
