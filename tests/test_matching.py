"""Match index and bank: exact against brute force, live adds and removals."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.contracts import BankEntry
from pipeline.matching.bank import Bank
from pipeline.matching.index import ExactIndex, HammingIndex


def brute(bank: dict[int, str], query: str, radius: int) -> list[tuple[int, int]]:
    hits = [(ref, (int(code, 16) ^ int(query, 16)).bit_count()) for ref, code in bank.items()]
    return sorted((h for h in hits if h[1] <= radius), key=lambda h: (h[1], h[0]))


def near(code: str, flips: int, rng: random.Random, bits: int = 256) -> str:
    value = int(code, 16)
    for bit in rng.sample(range(bits), flips):
        value ^= 1 << bit
    return f"{value:0{bits // 4}x}"


ops = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "query"]), st.integers(0, 30), st.integers(0, 80)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, seed=st.integers(0, 2**32), bits=st.sampled_from([64, 256]))
def test_hamming_index_equals_brute_force_under_interleaved_updates(ops, seed, bits):
    rng = random.Random(seed)
    seeds = [f"{rng.getrandbits(bits):0{bits // 4}x}" for _ in range(3)]
    index, live = HammingIndex(bits, initial_capacity=4), {}
    for op, ref, amount in ops:
        if op == "add":
            live[ref] = near(rng.choice(seeds), amount % (bits // 4), rng, bits)
            index.add(ref, live[ref])
        elif op == "remove":
            live.pop(ref, None)
            index.remove(ref)
        else:
            query = near(rng.choice(seeds), amount % 20, rng, bits)
            radius = amount if amount < bits else bits
            got = sorted(index.query(query, radius), key=lambda h: (h[1], h[0]))
            assert got == brute(live, query, radius)
    assert len(index) == len(live)


def test_hamming_edge_cases():
    index = HammingIndex(256)
    assert index.query("0" * 64, 256) == []
    index.add(1, "f" * 64)
    index.add(2, "f" * 64)  # same signal under another id
    assert sorted(index.query("f" * 64, 0)) == [(1, 0), (2, 0)]
    assert index.query("0" * 64, 255) == []
    assert sorted(index.query("0" * 64, 256)) == [(1, 256), (2, 256)]
    index.remove(1)
    assert index.query("f" * 64, 0) == [(2, 0)]


def test_hamming_memory_follows_live_entries():
    index = HammingIndex(64, initial_capacity=8)
    for round_ in range(50):
        for ref in range(8):
            index.add(round_ * 8 + ref, f"{ref:016x}")
        for ref in range(8):
            index.remove(round_ * 8 + ref)
    assert len(index) == 0
    assert index._codes.shape[0] == 8  # slots reused, no growth per update


def test_exact_index():
    index = ExactIndex()
    index.add(1, "abc")
    index.add(2, "abc")
    index.add(1, "def")  # re-adding a ref moves it
    assert index.query("abc", 0) == [(2, 0)]
    index.remove(2)
    assert index.query("abc", 0) == []
    assert len(index) == 1


def entry(bank: str, entry_id: str, signal_type: str, signal: str, hint: str = "takedown"):
    return BankEntry(bank, entry_id, signal_type, signal, (), hint, "")


def test_bank_applies_adds_replacements_and_tombstones():
    bank = Bank()
    pdq = "0" * 64
    bank.apply("tve/pdq/a", entry("tve", "a", "pdq", pdq))
    assert [m.entry.entry_id for m in bank.match("pdq", pdq)] == ["a"]
    bank.apply("tve/pdq/a", entry("tve", "a", "pdq", "f" * 64))  # replaced, not duplicated
    assert bank.match("pdq", pdq) == []
    assert bank.sizes() == {("tve", "pdq"): 1}
    bank.apply("tve/pdq/a", None)
    assert bank.match("pdq", "f" * 64) == []
    assert bank.sizes() == {}
    bank.apply("tve/pdq/never-added", None)  # a tombstone for nothing is harmless


def test_thresholds_per_bank_and_signal_type():
    bank = Bank({"strict/pdq": {"takedown": 10, "review": 20}, "*/phash": {"takedown": 2}})
    assert (bank.thresholds("strict", "pdq").takedown, bank.thresholds("strict", "pdq").review) == (
        10,
        20,
    )
    assert bank.thresholds("other", "pdq").takedown == 31
    assert bank.thresholds("any", "phash").takedown == 2
    code = "0" * 64
    bank.apply("strict/pdq/a", entry("strict", "a", "pdq", code))
    bank.apply("loose/pdq/b", entry("loose", "b", "pdq", code))
    query = f"{(1 << 25) - 1:064x}"  # 25 bits away
    found = {m.entry.bank: m for m in bank.match("pdq", query)}
    assert set(found) == {"loose"}  # 25 is past the strict bank's review distance
    assert found["loose"].distance == 25
    closer = {m.entry.bank: m for m in bank.match("pdq", f"{(1 << 15) - 1:064x}")}
    assert set(closer) == {"strict", "loose"}
    assert closer["strict"].thresholds.takedown < 15 <= closer["strict"].thresholds.review
