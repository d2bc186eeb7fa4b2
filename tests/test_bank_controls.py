"""Bank controls in memory: thresholds, actions, shadow banks, gradual rollout, disabled and
quarantined entries, flood windows, and a bank file's round trip."""

from __future__ import annotations

import csv
import io
import random

import orjson
from stages import loop, records
from streaming import inline, upload

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls, share_of
from modstream.bank.files import read_bank_file, write_bank_file
from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    DECISIONS_TOPIC,
    HASHED_TOPIC,
    BankConfig,
    BankEntry,
    EntryControl,
    UploadEvent,
)
from modstream.decide.flood import FloodPolicy, FloodWatch
from modstream.demo import encode, sample
from modstream.engine import Engine, hash_media
from modstream.settings import Settings

ROCKET = encode(sample("rocket"), quality=90)
MEDIA = (hash_media("m", "image", ROCKET, 10**8),)
PDQ = MEDIA[0].signals["pdq"]["value"]
EVENT = UploadEvent.parse(upload("x", text="a photo")[1])


def engine_with(*entries: BankEntry, **configs: BankConfig) -> Engine:
    controls = BankControls()
    for name, config in configs.items():
        controls.apply(f"bank/{name}", config.to_json())
    bank = Bank(controls=controls)
    for entry in entries:
        bank.apply(entry.key, entry)
    return Engine.from_settings(Settings(), bank)


def found(engine: Engine, at: float = 1_000.0) -> dict[str, tuple[str, str]]:
    evidence = engine.decide(EVENT, MEDIA, at).evidence
    return {e.bank: (e.kind, e.action) for e in evidence if e.bank}


def entry(bank: str, hint: str = "takedown", signal: str = PDQ) -> BankEntry:
    return BankEntry(bank, "e1", "pdq", signal, (), hint, "")


def test_a_banks_action_replaces_its_entries_hints_and_shadow_never_acts():
    engine = engine_with(
        entry("capped"),
        entry("strict", hint="review"),
        entry("shadow"),
        capped=BankConfig(action="review"),
        strict=BankConfig(action="takedown"),
        shadow=BankConfig(action="shadow"),
    )
    assert found(engine) == {
        "capped": ("hash_match", "review"),
        "strict": ("hash_match", "takedown"),
        "shadow": ("shadow_match", "allow"),
    }
    shadow = next(e for e in engine.decide(EVENT, MEDIA, 1.0).evidence if e.bank == "shadow")
    assert shadow.parts[-1] == {"would": "takedown"}


def test_per_bank_thresholds_on_bank_config_come_first():
    far = f"{int(PDQ, 16) ^ ((1 << 20) - 1):064x}"  # 20 bits from the photo
    engine = engine_with(
        entry("default", signal=far),
        entry("strict", signal=far),
        strict=BankConfig(thresholds={"pdq": {"takedown": 10, "review": 15}}),
    )
    assert found(engine) == {"default": ("hash_match", "takedown")}  # 20 > strict's 15
    assert engine.bank.thresholds("strict", "pdq").takedown == 10


def test_disabled_banks_and_entries_are_not_looked_at_until_their_time():
    engine = engine_with(entry("off"), entry("on"), off=BankConfig(enabled=False))
    assert set(found(engine)) == {"on"}
    engine.controls.apply("entry/on/pdq/e1", EntryControl(disabled_until=2_000.0).to_json())
    assert found(engine, at=1_999.0) == {}
    assert set(found(engine, at=2_000.0)) == {"on"}


def test_enabled_ratio_picks_the_same_share_of_content_every_time():
    controls = BankControls()
    controls.apply("bank/rollout", BankConfig(enabled_ratio=0.25).to_json())
    rng = random.Random(3)
    signals = [f"{rng.getrandbits(256):064x}" for _ in range(4000)]
    chosen = [s for s in signals if controls.applies("rollout", s)]
    assert 0.22 < len(chosen) / len(signals) < 0.28
    assert chosen == [s for s in signals if controls.applies("rollout", s)]  # deterministic
    other = {s for s in signals if share_of("other", s) < 0.25}
    assert len(other & set(chosen)) < len(chosen) / 2  # each bank a different slice


def test_a_quarantined_entry_sends_its_matches_to_review():
    engine = engine_with(entry("shared"))
    reason = "60 matches in 60 s"
    control = EntryControl(quarantined_at=1.0, reason=reason).to_json()
    engine.controls.apply("entry/shared/pdq/e1", control)
    evidence = next(e for e in engine.decide(EVENT, MEDIA, 5.0).evidence if e.bank == "shared")
    assert (evidence.kind, evidence.action) == ("quarantined", "review")
    assert reason in (evidence.detail or "")


def test_flood_windows():
    watch = FloodWatch(FloodPolicy(window_s=60, min_matches=10, factor=5, baseline_s=600))
    # A steady entry: 1 match every 2 s for ten minutes never floods...
    assert all(watch.observe("steady", 1000.0 + 2 * i) is None for i in range(300))
    # ... nor does a doubling of its rate; a tenfold jump does.
    assert all(watch.observe("steady", 1600.0 + i) is None for i in range(60))
    flooded = [watch.observe("steady", 1660.0 + i / 10) for i in range(600)]
    assert any(flooded)
    assert "matches in 60 s" in next(r for r in flooded if r)
    # An entry without a window of history floods at factor x min_matches (5 x 10).
    assert [watch.observe("new", 5000.0 + i / 2) is not None for i in range(50)][-2:] == [
        False, True,
    ]  # fmt: skip
    small = FloodWatch(FloodPolicy(min_matches=1, max_tracked=3))
    for n in range(10):
        small.observe(f"e{n}", 1.0)
    assert len(small._entries) == 3  # noqa: SLF001 - the bound itself is what is tested


async def test_the_decide_stage_quarantines_a_flooding_entry_for_every_worker(tmp_path):
    shared = BankEntry("shared", "rocket", "pdq", PDQ, (), "takedown", "")
    lp = loop(tmp_path, [shared], flood_min_matches=5, flood_factor=1, flood_window_s=60)
    uploads = [upload(f"p{n}", media=inline(ROCKET), uploader=f"u{n}") for n in range(8)]
    await lp.hash.process(records("uploads", uploads))
    await lp.decide.process(lp.out.as_records(HASHED_TOPIC))
    verdicts = [orjson.loads(v)["verdict"] for _, v, _ in lp.out.sent[DECISIONS_TOPIC]]
    assert verdicts == ["takedown"] * 5 + ["review"] * 3
    ((key, value, _),) = lp.out.sent[BANK_CONFIG_TOPIC]
    assert key == b"entry/shared/pdq/rocket"
    assert EntryControl.parse(value).quarantined_at is not None
    assert lp.controls.quarantined() == ["shared/pdq/rocket"]


def test_an_exported_bank_reads_back_as_the_same_entries(tmp_path):
    entries = [
        BankEntry("b", "e1", "pdq", PDQ, ("tve", "still"), "takedown", "2026-11-01T00:00:00Z",
                  {"source": "review", "reviewer": "rev-7"}),
        BankEntry("b", "e2", "md5", "0" * 32, (), "review", "2026-11-02T00:00:00Z"),
        BankEntry("b", "e3", "text", "glory to the martyrs", (), "allow", "2026-11-03T00:00:00Z"),
    ]  # fmt: skip
    counts = {"b/pdq/e1": {"confirm": 3, "overturn": 1}}
    for fmt in ("csv", "jsonl"):
        out = io.StringIO()
        assert write_bank_file(entries, counts, out, fmt) == 3
        path = tmp_path / f"bank.{fmt}"
        path.write_text(out.getvalue())
        again = sorted(read_bank_file(path, "b"), key=lambda e: e.entry_id)
        assert again == entries
        second = io.StringIO()
        write_bank_file(again, counts, second, fmt)
        assert second.getvalue() == out.getvalue()
    assert '"outcomes":{"confirm":3,"overturn":1}' in out.getvalue()


def test_exported_cells_a_spreadsheet_would_run_are_quoted_and_read_back(tmp_path):
    """OWASP's CSV injection: a label or entry id starting with = + - @ is written behind a
    quote (no spreadsheet runs it), and importing the file gives the entry back as it was."""
    hostile = [
        BankEntry("b", "=cmd|' /C calc'!A0", "pdq", PDQ, ("+SUM(1,2)", "tve"), "takedown",
                  "2026-11-01T00:00:00Z"),
        BankEntry("b", "@x", "md5", "0" * 32, ("-2+3",), "review", "2026-11-02T00:00:00Z"),
    ]  # fmt: skip
    for fmt in ("csv", "threatexchange-csv"):
        out = io.StringIO()
        write_bank_file(hostile, {}, out, fmt)
        cells = [cell for row in csv.reader(io.StringIO(out.getvalue())) for cell in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")], cells
        assert {"'=cmd|' /C calc'!A0", "'@x"} <= set(cells) or fmt != "csv"
        assert {"'+SUM(1,2);tve", "'+SUM(1,2) tve"} & set(cells)
        path = tmp_path / f"bank-{fmt}.csv"
        path.write_text(out.getvalue())
        again = sorted(read_bank_file(path, "b"), key=lambda e: e.signal_type, reverse=True)
        assert [e.labels for e in again] == [e.labels for e in hostile]
        if fmt == "csv":
            assert again == hostile
