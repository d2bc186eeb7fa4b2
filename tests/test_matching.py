"""The equality index and the bank: adds, replacements, tombstones, thresholds, batches."""

import random

import pytest

from modstream.bank.bank import Bank
from modstream.contracts import BankEntry
from modstream.matching.index import ExactIndex


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


def test_bank_batch_matches_equal_single_matches():
    bank = Bank()
    codes = ["0" * 64, "f" * 64, f"{(1 << 40) - 1:064x}"]
    for i, code in enumerate(codes):
        bank.apply(f"tve/pdq/{i}", entry("tve", str(i), "pdq", code))
    queries = [*codes, f"{(1 << 5) - 1:064x}", "a" * 64]
    assert bank.match_many("pdq", queries) == [bank.match("pdq", q) for q in queries]
    assert bank.match_many("md5", ["x"]) == [[]]


def test_bank_snapshot_restores_every_entry_and_keeps_taking_changes(tmp_path):
    rng = random.Random(4)
    bank = Bank()
    pdqs = [f"{rng.getrandbits(256):064x}" for _ in range(300)]
    for i, code in enumerate(pdqs):
        bank.apply(f"tve/pdq/p{i}", entry("tve", f"p{i}", "pdq", code))
        bank.apply(f"tve/md5/m{i}", entry("tve", f"m{i}", "md5", f"{i:032x}"))
    for i in range(0, 300, 7):
        bank.apply(f"tve/pdq/p{i}", None)
    statement = "the soldiers of the covenant will remain and every brother must answer"
    bank.apply("tve/text/s1", entry("tve", "s1", "text", statement))
    bank.snapshot()(tmp_path / "one")

    def matches(b: Bank) -> list:
        return [
            sorted((m.entry.entry_id, m.distance) for m in found)
            for found in b.match_many("pdq", pdqs)
            + b.match_many("md5", [f"{i:032x}" for i in range(300)])
        ]

    restored = Bank()
    restored.restore(tmp_path / "one")
    assert matches(restored) == matches(bank)
    assert (
        restored.sizes()
        == bank.sizes()
        == {("tve", "pdq"): 257, ("tve", "md5"): 300, ("tve", "text"): 1}
    )
    assert [m.entry.entry_id for m in restored.match("text", f"look: {statement}")] == ["s1"]
    for b in (bank, restored):  # the same changes on both: frozen entries replaced and removed
        b.apply("tve/pdq/p1", entry("tve", "p1", "pdq", pdqs[2]))
        b.apply("tve/md5/m3", None)
        b.apply("other/pdq/new", entry("other", "new", "pdq", pdqs[3]))
    assert matches(restored) == matches(bank)
    restored.snapshot()(tmp_path / "two")  # frozen with holes plus live entries
    again = Bank()
    again.restore(tmp_path / "two")
    assert matches(again) == matches(bank)
    assert len(again) == len(bank)
    again.apply("other/pdq/new", None)
    assert [m.entry.bank for m in again.match("pdq", pdqs[3])] == ["tve"]


@pytest.mark.parametrize(
    ("kind", "signal"), [("exact", "same"), ("shingle", "join the caravan now")]
)
def test_pairs_indexes_can_be_searched_while_entries_come_and_go(kind, signal):
    """Lookups run on a thread while the event loop applies bank changes."""
    import threading

    from modstream.matching.shingles import ShingleIndex

    index = ExactIndex() if kind == "exact" else ShingleIndex()
    failures: list[BaseException] = []
    done = threading.Event()

    def search():
        try:
            while not done.is_set():
                index.query_many([signal] * 8, 40)
        except BaseException as exc:  # any failure fails the test
            failures.append(exc)

    threads = [threading.Thread(target=search) for _ in range(2)]
    for thread in threads:
        thread.start()
    removed = set()
    for ref in range(3000):
        index.add(ref, signal)
        if ref % 3 == 0 and ref:
            index.remove(ref - 1)
            removed.add(ref - 1)
    done.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(index) == 3000 - len(removed)


def test_bank_lookups_are_safe_while_entries_of_every_kind_come_and_go():
    """The decide stage searches on a thread while the event loop applies bank records and
    tombstones: videos (whose frames share the PDQ index), images and texts, all at once."""
    import random
    import sys
    import threading

    from modstream.formats.vpdq import FrameHash, format_vpdq

    rng = random.Random(7)
    hexes = [f"{rng.getrandbits(256):064x}" for _ in range(40)]
    videos = [
        format_vpdq(FrameHash(n, 100, hexes[(v + n) % 40], float(n)) for n in range(6))
        for v in range(10)
    ]
    bank = Bank()
    failures: list[BaseException] = []
    done = threading.Event()

    def search():
        try:
            while not done.is_set():
                bank.match_many("vpdq", videos[:3])
                bank.match_many("pdq", hexes[:8])
                bank.match_many("text", ["join the caravan now"])
        except BaseException as exc:  # any failure fails the test
            failures.append(exc)

    threads = [threading.Thread(target=search) for _ in range(2)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can: races show
    for thread in threads:
        thread.start()
    for step in range(1200):
        n = step % 10
        bank.apply(f"tve/vpdq/v{n}", entry("tve", f"v{n}", "vpdq", videos[n]) if step % 3 else None)
        bank.apply(f"tve/pdq/p{n}", entry("tve", f"p{n}", "pdq", hexes[n]) if step % 2 else None)
        bank.apply(f"tve/text/t{n}", entry("tve", f"t{n}", "text", "join the caravan now"))
    done.set()
    for thread in threads:
        thread.join()
    sys.setswitchinterval(switch)
    assert failures == []
    assert [m.entry.entry_id for m in bank.match("vpdq", videos[0])][:1] == ["v0"]


def test_a_bank_adopts_the_snapshot_it_wrote_keeping_changes_made_while_it_was_written(
    tmp_path,
):
    """A replayed bank swaps its live entries for the snapshot's frozen tier (what keeps its
    memory at a restored bank's); changes between capture and adoption must survive."""
    rng = random.Random(5)
    pdqs = [f"{rng.getrandbits(256):064x}" for _ in range(200)]
    bank, twin = Bank(), Bank()  # the twin never snapshots: the reference
    for b in (bank, twin):
        for i, code in enumerate(pdqs[:150]):
            b.apply(f"tve/pdq/p{i}", entry("tve", f"p{i}", "pdq", code))
    write = bank.snapshot()
    for b in (bank, twin):  # while the snapshot is written: remove, replace, add
        b.apply("tve/pdq/p0", None)
        b.apply("tve/pdq/p1", entry("tve", "p1", "pdq", pdqs[199]))
        for i in range(150, 160):
            b.apply(f"tve/pdq/p{i}", entry("tve", f"p{i}", "pdq", pdqs[i]))
    write(tmp_path / "snap")
    bank.adopt(tmp_path / "snap")
    assert bank.unfrozen() == 11  # only what came after the capture stays in Python objects

    def found(b: Bank) -> list:
        hits = b.match_many("pdq", pdqs)
        return [sorted((m.entry.entry_id, m.distance) for m in ms) for ms in hits]

    assert found(bank) == found(twin)
    assert len(bank) == len(twin) == 159
    for b in (bank, twin):  # keys still resolve: replace and remove frozen entries after it
        b.apply("tve/pdq/p2", None)
        b.apply("tve/pdq/p3", entry("tve", "p3", "pdq", pdqs[198]))
    assert found(bank) == found(twin)
    bank.snapshot()(tmp_path / "again")
    restored = Bank()
    restored.restore(tmp_path / "again")
    assert found(restored) == found(twin)


def test_a_bank_snapshot_has_one_versioned_manifest_for_all_its_parts(tmp_path):
    import json

    from modstream.bank.bank import SNAPSHOT_VERSION, snapshot_manifest

    bank = Bank()
    bank.apply("tve/pdq/p", entry("tve", "p", "pdq", "f" * 64))
    bank.apply("tve/md5/m", entry("tve", "m", "md5", "0" * 32))
    bank.snapshot()(tmp_path / "snap", replica={"topic": "hashbank", "positions": {"0": 2}})
    manifests = sorted(p.relative_to(tmp_path / "snap") for p in tmp_path.rglob("manifest.json"))
    assert [str(m) for m in manifests] == ["manifest.json"]  # the parts have none of their own
    manifest = snapshot_manifest(tmp_path / "snap")
    assert manifest["version"] == SNAPSHOT_VERSION
    assert {n: p["kind"] for n, p in manifest["indexes"].items()} == {
        "pdq": "hamming",
        "md5": "exact",
    }
    assert manifest["replica"]["positions"] == {"0": 2}
    older = {**manifest, "version": SNAPSHOT_VERSION - 1}
    (tmp_path / "snap" / "manifest.json").write_text(json.dumps(older))
    with pytest.raises(ValueError, match="bank snapshot version"):
        Bank().restore(tmp_path / "snap")
