"""Exchange sync without a broker: python-threatexchange's real ``local_file`` and
``sample`` exchanges and its TCAP client against a loopback server, into an in-memory sink."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from modstream.contracts import BankEntry, ContractError, ExchangeConfig, ExchangeState, dumps
from modstream.exchanges import compat
from modstream.exchanges.catalog import ExchangeSetupError, collab_config, open_exchange
from modstream.exchanges.mapping import Ledger, published
from modstream.exchanges.sync import SyncError, SyncLimits, describe, sync_exchange

PDQ_A = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
PDQ_B = "f8f8f0cee0f4a84f06370a2a038f63f0b36e26d596621e1d33e6b39c4e9c9b22"
MD5_A = "cab08b36195edb1a1231d2d09fa450e0"


class MemorySink:
    """What the Kafka shell does, in memory: the bank as a dict, the states written."""

    def __init__(self) -> None:
        self.bank: dict[str, BankEntry] = {}
        self.states: list[ExchangeState] = []
        self.records = 0

    async def write(self, config, writes, state) -> None:
        for key, value in writes.items():
            self.records += 1
            if value is None:
                self.bank.pop(key, None)
            else:
                self.bank[key] = BankEntry.parse(value)
        self.states.append(state)


def sync(config, state, ledger, sink, **limits):
    return asyncio.run(sync_exchange(config, state, ledger, sink, SyncLimits(**limits)))


def local_file(path: Path, **extra) -> ExchangeConfig:
    return ExchangeConfig(
        name="partner", api="local_file", bank="shared", settings={"path": str(path)}, **extra
    )


def test_local_file_syncs_removes_and_publishes_nothing_twice(tmp_path: Path) -> None:
    signals = tmp_path / "signals.txt"
    signals.write_text(f"pdq {PDQ_A}\npdq {PDQ_B}\nvideo_md5 {MD5_A}\nurl https://example.org/\n")
    config, ledger, sink = local_file(signals), Ledger(), MemorySink()
    state = sync(config, None, ledger, sink)
    entries = sorted((e.signal_type, e.signal) for e in sink.bank.values())
    assert entries == [("md5", MD5_A), ("pdq", PDQ_A), ("pdq", PDQ_B)]
    assert (state.fetched, state.published, state.deleted) == (4, 3, 0)
    assert state.skipped == {"url": 1}
    assert state.last_success_at and not state.syncing and state.error == ""
    entry = next(e for e in sink.bank.values() if e.signal == PDQ_A)
    assert entry.provenance and entry.provenance["exchange"] == "partner"
    assert entry.provenance["api"] == "local_file" and entry.bank == "shared"

    written = sink.records
    state = sync(config, state, ledger, sink)  # the same file again: nothing written
    assert sink.records == written and state.unchanged == 3

    signals.write_text(f"pdq {PDQ_A}\nvideo_md5 {MD5_A}\n")  # a line removed
    state = sync(config, state, ledger, sink)
    assert sorted(e.signal for e in sink.bank.values()) == sorted([PDQ_A, MD5_A])
    assert state.deleted == 1 and sink.records == written + 1


def test_a_restarted_sync_rebuilds_its_ledger_from_the_bank(tmp_path: Path) -> None:
    signals = tmp_path / "signals.txt"
    signals.write_text(f"pdq {PDQ_A}\npdq {PDQ_B}\n")
    sink = MemorySink()
    state = sync(local_file(signals), None, Ledger(), sink)
    rebuilt = Ledger()
    for key, entry in sink.bank.items():  # what the service reads back from hashbank
        rebuilt.know(key, *published(dumps(entry))[1:])
    written = sink.records
    state = sync(local_file(signals), state, rebuilt, sink)
    assert sink.records == written

    gone = next(key for key, e in sink.bank.items() if e.signal == PDQ_B)
    rebuilt.forget(gone)  # a tombstone later in hashbank (someone ran bank remove)
    assert len(rebuilt) == 1 and gone not in rebuilt
    sync(local_file(signals), state, rebuilt, sink)  # the file still has it: published again
    assert len(rebuilt) == 2 and sink.states[-1].published == 3


def test_the_sample_exchange_and_its_types(tmp_path: Path) -> None:
    config = ExchangeConfig(name="sample", api="sample", bank="samples")
    sink = MemorySink()
    state = sync(config, None, Ledger(), sink)
    kinds = {e.signal_type for e in sink.bank.values()}
    assert {"pdq", "md5", "text"} <= kinds
    assert state.published == len(sink.bank) > 5


def test_large_pages_are_written_in_slices_with_the_checkpoint_last(tmp_path: Path) -> None:
    signals = tmp_path / "signals.txt"
    signals.write_text("".join(f"video_md5 {i:032x}\n" for i in range(25)))
    sink = MemorySink()
    sync(local_file(signals), None, Ledger(), sink, slice_records=10)
    assert len(sink.bank) == 25
    assert [s.published for s in sink.states] == [10, 20, 25, 25]


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="No such file"):
        sync(local_file(tmp_path / "gone.txt"), None, Ledger(), MemorySink())


def test_exchange_configs_refuse_secrets_and_unknown_apis() -> None:
    def parse(**fields):
        return ExchangeConfig.parse(orjson.dumps({"schema": 1, "name": "x", "bank": "b", **fields}))

    assert parse(api="stopncii").api == "stop_ncii"
    with pytest.raises(ContractError, match="api: one of"):
        parse(api="carrier_pigeon")
    with pytest.raises(ContractError, match="credentials are not stored in Kafka"):
        parse(api="tat", settings={"password": "hunter2"})
    with pytest.raises(ContractError, match="credentials"):
        parse(api="tat", credentials={"inline": "user:pass"})
    with pytest.raises(ExchangeSetupError, match="needs the setting"):
        collab_config(ExchangeConfig(name="t", api="fb_threatexchange", bank="b"))
    with pytest.raises(ExchangeSetupError, match="no setting 'colour'"):
        collab_config(
            ExchangeConfig(
                name="t", api="local_file", bank="b", settings={"path": "/x", "colour": "red"}
            )
        )


def test_credentials_come_from_the_named_file_or_variable_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tat = ExchangeConfig(name="tcap", api="tat", bank="b")
    with pytest.raises(ExchangeSetupError, match="needs credentials"):
        open_exchange(tat)
    secret = tmp_path / "tcap"
    secret.write_text("analyst:s3cr3t-Passw0rd\n")
    api = open_exchange(
        ExchangeConfig(name="tcap", api="tat", bank="b", credentials={"file": str(secret)})
    )
    assert (api.username, api.password) == ("analyst", "s3cr3t-Passw0rd")
    monkeypatch.setenv("MY_TX_TOKEN", "not-a-token s3cr3t")
    te = ExchangeConfig(
        name="te",
        api="fb_threatexchange",
        bank="b",
        settings={"privacy_group": "1"},
        credentials={"env": "MY_TX_TOKEN"},
    )
    with pytest.raises(ExchangeSetupError) as refused:
        open_exchange(te)
    assert "s3cr3t" not in str(refused.value) and "missing or not valid" in str(refused.value)
    with pytest.raises(ExchangeSetupError, match="https, or http on a loopback"):
        open_exchange(
            ExchangeConfig(
                name="t",
                api="tat",
                bank="b",
                credentials={"file": str(secret)},
                settings={"base_url": "http://10.0.0.8/"},
            )
        )


def test_errors_never_carry_query_strings() -> None:
    class Response:
        status_code, reason = 400, "Bad Request"
        url = "https://graph.facebook.com/v9/threat_updates?access_token=123|abc&limit=1"

    class HTTPError(Exception):
        response = Response()

    assert describe(HTTPError()) == (
        "HTTP 400 Bad Request from https://graph.facebook.com/v9/threat_updates"
    )


def test_compat_checks_the_library_version_and_parses_credentials() -> None:
    from threatexchange.exchanges.impl.techagainstterrorism_api import TATCredentials

    compat.check_version()
    parsed = compat.parse_credentials(TATCredentials, "user:pass")
    assert (parsed.username, parsed.password) == ("user", "pass")
    with pytest.raises(ValueError):
        compat.parse_credentials(TATCredentials, "no-colon")


def tcap_config(server, tmp_path: Path) -> ExchangeConfig:
    secret = tmp_path / "tcap-credentials"
    secret.write_text("analyst:pw")
    return ExchangeConfig(
        name="tcap",
        api="tat",
        bank="tcap",
        credentials={"file": str(secret)},
        settings={"base_url": server.url},
    )


def test_tcap_pages_checkpoints_deletions_and_ideology(tmp_path: Path) -> None:
    from tcap_server import TCAPList, TCAPServer

    hashes = TCAPList(page_size=2)
    first = hashes.add(PDQ_A, "PDQ", ideology="far-right", file_type="png")
    hashes.add(MD5_A, "MD5", file_type="jpg")  # an image MD5: python-threatexchange drops it
    hashes.add("a" * 64, "SHA256")
    hashes.add("not-a-hash", "PDQ")
    hashes.add("c" * 40, "SHA1")
    with TCAPServer(hashes) as server:
        config, ledger, sink = tcap_config(server, tmp_path), Ledger(), MemorySink()
        state = sync(config, None, ledger, sink)
        assert sorted(e.signal_type for e in sink.bank.values()) == ["md5", "pdq", "sha256"]
        pdq = next(e for e in sink.bank.values() if e.signal_type == "pdq")
        assert pdq.labels == ("ideology:far-right",)
        assert pdq.provenance is not None
        assert pdq.provenance["file_type"] == "png" and pdq.provenance["tat_id"] == str(first["id"])
        assert state.skipped == {"invalid pdq": 1, "sha1": 1}
        assert state.checkpoint == {
            "checkpoint": f"{hashes.records[-1]['updated_on']},{hashes.records[-1]['id']}"
        }
        assert state.progress_at == int(hashes.records[-1]["updated_on"])
        pages = [q for q in hashes.requests if q != "token"]
        assert len(pages) == 3  # 5 records in pages of 2

        hashes.requests.clear()
        hashes.delete(first)
        hashes.add(PDQ_B, "PDQ")
        state = sync(config, state, ledger, sink)
        assert sorted(e.signal for e in sink.bank.values() if e.signal_type == "pdq") == [PDQ_B]
        assert state.deleted == 1 and state.fetched == 7
        assert all(f"after={state.checkpoint['checkpoint']}" not in q for q in hashes.requests)


def test_tcap_failures_keep_the_checkpoint(tmp_path: Path) -> None:
    from tcap_server import TCAPList, TCAPServer

    hashes = TCAPList(page_size=2)
    for n in range(5):
        hashes.add(f"{n:032x}", "MD5")
    with TCAPServer(hashes) as server:
        config, ledger, sink = tcap_config(server, tmp_path), Ledger(), MemorySink()
        hashes.broken_digest = f"{2:032x}"  # the second page
        with pytest.raises(SyncError, match=r"JSONDecodeError|Expecting"):
            sync(config, None, ledger, sink)
        kept = sink.states[-1]
        assert len(sink.bank) == 2 and kept.checkpoint is not None  # the first page stands
        hashes.broken_digest = None
        hashes.expired = True
        with pytest.raises(SyncError, match="HTTP 401"):
            sync(config, kept, ledger, sink)
        hashes.expired = False
        state = sync(config, kept, ledger, sink)
        assert len(sink.bank) == 5 and state.published == 5


def test_bank_files_in_python_threatexchange_formats_read_and_write_back(tmp_path: Path) -> None:
    from collections import Counter

    from modstream.bank.files import read_bank_file, write_bank_file
    from modstream.formats.vpdq import format_vpdq_json, parse_vpdq

    dataset = tmp_path / "collab.csv"  # as `threatexchange dataset -P --csv` writes it
    dataset.write_text(
        "signal_type,signal_str,collab,category,tags\n"
        f"pdq,{PDQ_A},Sample Data,POSITIVE_CLASS,tve propaganda\n"
        f"pdq,{PDQ_B},Sample Data,DISPUTED,\n"
        f"video_md5,{MD5_A},Sample Data,NEGATIVE_CLASS,\n"
        "url,https://example.org/,Sample Data,POSITIVE_CLASS,\n"
        "raw_text,Join the ranks of the brothers,Sample Data,INVESTIGATION_SEED,\n"
    )
    skipped: Counter[str] = Counter()
    entries = {e.signal: e for e in read_bank_file(dataset, "tx", skipped=skipped)}
    assert skipped == {"negative opinion": 1, "type url": 1}
    assert (
        entries[PDQ_A].labels == ("tve", "propaganda") and entries[PDQ_A].action_hint == "takedown"
    )
    assert entries[PDQ_B].action_hint == "review"
    assert entries[PDQ_A].provenance == {"collab": "Sample Data"}
    assert {e.signal_type for e in entries.values()} == {"pdq", "text"}

    frames = "".join(f"{n},100,{PDQ_A if n % 2 else PDQ_B},{n}.000\n" for n in range(4))
    hma_vpdq = tmp_path / "clip.json"  # HMA's and python-threatexchange's vPDQ signal form
    hma_vpdq.write_text(format_vpdq_json(parse_vpdq(frames)))
    (video,) = read_bank_file(hma_vpdq, "tx")
    assert (video.signal_type, video.entry_id, video.signal) == ("vpdq", "clip", frames)

    local = tmp_path / "signals.txt"  # python-threatexchange's local_file exchange
    local.write_text(f"pdq {PDQ_A}\nvideo_md5 {MD5_A}\nvpdq {hma_vpdq.read_text()}\n")
    assert [e.signal_type for e in read_bank_file(local, "tx")] == ["pdq", "md5", "vpdq"]

    bank = [*entries.values(), video]
    for fmt in ("threatexchange-csv", "local-file"):
        written = tmp_path / f"out-{fmt}"
        with written.open("w") as out:
            assert write_bank_file(bank, {}, out, fmt) == 4
        again = {(e.signal_type, e.signal, e.action_hint) for e in read_bank_file(written, "tx")}
        if fmt == "local-file":  # the format has no opinions: every entry acts
            assert {(t, s) for t, s, _ in again} == {(e.signal_type, e.signal) for e in bank}
        else:  # review-only is INVESTIGATION_SEED ("requires verifying"), read with the
            # import's --action-hint: the default takedown here, review with --action-hint review
            assert again == {(e.signal_type, e.signal, "takedown") for e in bank}
            seeds = {e.signal for e in read_bank_file(written, "tx", "review")}
            assert (tmp_path / f"out-{fmt}").read_text().count("INVESTIGATION_SEED") == 1
            assert PDQ_B in seeds
    text = (tmp_path / "out-local-file").read_text()
    assert "\nraw_text join the ranks" in text and "\nvpdq [" in text
