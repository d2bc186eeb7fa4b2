"""Read bank entries from files: CSV (``signal_type,signal[,entry_id,labels]``), JSON lines,
or a vPDQ file (one video: ``frame_number,quality,pdq_hex,timestamp`` lines; its entry id is
the file name without ``.vpdq``)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from modstream.contracts import BankEntry, ContractError
from modstream.signals import get as get_signal_type


def read_bank_file(path: Path, bank: str, action_hint: str = "takedown") -> Iterator[BankEntry]:
    """Entries of one bank; signals are validated and canonicalized, errors name the line."""
    text = path.read_text(encoding="utf-8")
    added_at = datetime.now(UTC).isoformat(timespec="seconds")
    is_jsonl = path.suffix in (".jsonl", ".ndjson") or text.lstrip().startswith("{")
    if path.suffix == ".vpdq" or _VPDQ_LINE.match(text.lstrip()):
        rows: Iterator[tuple[int, dict]] = iter(
            [(1, {"signal_type": "vpdq", "signal": text, "entry_id": path.stem})]
        )
    else:
        rows = _json_rows(text) if is_jsonl else _csv_rows(text)
    for line, row in rows:
        try:
            signal_type = str(row["signal_type"]).strip()
            signal = get_signal_type(signal_type).normalize(str(row["signal"]))
            labels = row.get("labels") or []
            if isinstance(labels, str):
                labels = [part.strip() for part in labels.split(";") if part.strip()]
            entry_id = str(row.get("entry_id") or "").strip() or _default_id(signal_type, signal)
            yield BankEntry.from_dict(
                {
                    "schema": 1,
                    "bank": bank,
                    "entry_id": entry_id,
                    "signal_type": signal_type,
                    "signal": signal,
                    "labels": labels,
                    "action_hint": row.get("action_hint") or action_hint,
                    "added_at": added_at,
                }
            )
        except (KeyError, ValueError, ContractError) as exc:
            raise ContractError(f"{path}:{line}: {exc}") from None


_VPDQ_LINE = re.compile(r"\d+,\d+,[0-9a-fA-F]{64},[\d.]+\s*$", re.MULTILINE)


def _default_id(signal_type: str, signal: str) -> str:
    """Stable id from the signal, so importing the same file twice does not duplicate it."""
    return f"{signal_type}-{hashlib.sha256(signal.encode()).hexdigest()[:16]}"


def _csv_rows(text: str) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"signal_type", "signal"} <= set(reader.fieldnames):
        raise ContractError("CSV bank file needs a header with signal_type,signal")
    for row in reader:
        yield reader.line_num, row


def _json_rows(text: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ContractError(f"line {number}: not valid JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ContractError(f"line {number}: expected a JSON object")
            yield number, row
