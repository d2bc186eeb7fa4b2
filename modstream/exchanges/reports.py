"""Reviewers' outcomes on matches of exchange entries, reported back to the exchange through
python-threatexchange's ``report_opinion``: a confirm is a true positive, an overturn a
false positive (an escalation says nothing yet).

Each (exchange, entry, opinion) is reported at most once, ever: the report is recorded as
``sending`` before the call and as ``sent``, ``unsupported`` or ``failed`` after it; a
``sending`` found after a crash is marked ``unknown`` and not sent again, because the
exchange may have it. python-threatexchange 1.2.17 implements ``report_opinion`` only for
``local_file`` (true positives, appended to the file; ``catalog.LocalFileExchange`` fixes
its file mode); for the other APIs the report is recorded as ``unsupported`` (see
docs/exchanges.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import orjson
from threatexchange.exchanges.fetch_state import SignalOpinion, SignalOpinionCategory

from modstream.contracts import ContractError, ExchangeConfig, ExchangeState
from modstream.exchanges.catalog import TX_SIGNAL_TYPES, open_exchange
from modstream.exchanges.sync import describe
from modstream.signals import get as get_signal_type

Opinion = Literal["true_positive", "false_positive"]
Status = Literal["sending", "sent", "unsupported", "failed", "unknown"]
OPINIONS: dict[str, Opinion] = {"confirm": "true_positive", "overturn": "false_positive"}
_CATEGORIES = {
    "true_positive": SignalOpinionCategory.POSITIVE_CLASS,
    "false_positive": SignalOpinionCategory.NEGATIVE_CLASS,
}


@dataclass(frozen=True)
class Report:
    """One report to an exchange (``exchange.state``, key ``report_key``)."""

    exchange: str
    entry: str  # the bank key
    opinion: Opinion
    status: Status
    decision_id: str
    at: float
    error: str = ""

    @property
    def key(self) -> str:
        return report_key(self.exchange, self.entry, self.opinion)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def parse(cls, raw: bytes) -> Report:
        try:
            return cls(**orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise ContractError(f"report: {exc}") from None


def report_key(exchange: str, entry: str, opinion: str) -> str:
    return f"report/{exchange}/{opinion}/{entry}"


#: Key of the record saying where the reporter has read ``review.entry_outcomes`` to.
REPORT_OFFSETS = "reports-offsets"


@dataclass
class StateTable:
    """``exchange.state`` read back: each exchange's state, the reports, the reader's
    offsets (by partition)."""

    states: dict[str, ExchangeState]
    reports: dict[str, Report]
    report_offsets: dict[int, int]


def read_state_table(
    table: Iterable[tuple[bytes, bytes]],
    on_error: Callable[[str, Exception], None] | None = None,
) -> StateTable:
    """Parse ``(key, value)`` records of ``exchange.state``; a record that does not parse
    goes to ``on_error`` (key, error), or raises without one."""
    found = StateTable({}, {}, {})
    for raw_key, value in table:
        key = raw_key.decode()
        try:
            if key.startswith("exchange/"):
                found.states[key[len("exchange/") :]] = ExchangeState.parse(value)
            elif key.startswith("report/"):
                found.reports[key] = Report.parse(value)
            elif key == REPORT_OFFSETS:
                offsets = orjson.loads(value).items()
                found.report_offsets = {int(p): int(o) for p, o in offsets}
        except (ContractError, ValueError, TypeError) as exc:
            if on_error is None:
                raise
            on_error(key, exc)
    return found


def send_report(
    config: ExchangeConfig, signal_type: str, signal: str, opinion: Opinion
) -> tuple[Status, str]:
    """Report through the exchange's API (blocking). Returns the status and, if it failed,
    why (never the credentials)."""
    kind = get_signal_type(signal_type)
    names = set(kind.exchange_names) or {kind.name}
    tx_type = next((t for t in TX_SIGNAL_TYPES if t.get_name() in names), None)
    if tx_type is None:
        return "unsupported", f"{config.api} has no signal type for {signal_type}"
    if signal_type == "vpdq":
        from modstream.formats.vpdq import format_vpdq_json, parse_vpdq

        signal = format_vpdq_json(parse_vpdq(signal))
    opinion_ = SignalOpinion(True, _CATEGORIES[opinion], set())
    try:
        open_exchange(config).report_opinion(tx_type, signal, opinion_)
    except NotImplementedError:
        return "unsupported", f"python-threatexchange's {config.api} takes no {opinion} reports"
    except Exception as exc:
        return "failed", describe(exc)
    return "sent", ""


def settled(report: Report, status: Status, error: str, at: float) -> Report:
    return dataclasses.replace(report, status=status, error=error, at=at)
