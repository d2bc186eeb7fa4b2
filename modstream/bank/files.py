"""Read bank entries from files: CSV (``signal_type,signal[,entry_id,labels]``), JSON lines,
or a vPDQ file (one video: ``frame_number,quality,pdq_hex,timestamp`` lines; its entry id is
the file name without ``.vpdq``); and write a bank as CSV or JSON lines (``bank export``),
which reads back as the same entries: labels, hint, time added and provenance, with the
entries' review outcome counts alongside (informational: they are the review loop's)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

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
            provenance = row.get("provenance") or None
            if isinstance(provenance, str):  # a CSV cell holds it as JSON
                provenance = orjson.loads(provenance)
            yield BankEntry.from_dict(
                {
                    "schema": 1,
                    "bank": bank,
                    "entry_id": entry_id,
                    "signal_type": signal_type,
                    "signal": signal,
                    "labels": labels,
                    "action_hint": row.get("action_hint") or action_hint,
                    "added_at": row.get("added_at") or added_at,
                    "provenance": provenance,
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


EXPORT_COLUMNS = ["signal_type", "signal", "entry_id", "labels", "action_hint", "added_at",
                  "provenance", "confirm", "overturn", "escalate"]  # fmt: skip


def write_bank_file(
    entries: Iterable[BankEntry], outcomes: dict[str, dict[str, int]], out: TextIO, fmt: str
) -> int:
    """Write entries (sorted by signal type and id) as ``csv`` or ``jsonl``; ``outcomes``
    maps an entry's bank key to its review outcome counts. Returns the count written."""
    rows = sorted(entries, key=lambda e: (e.signal_type, e.entry_id))
    writer = csv.DictWriter(out, EXPORT_COLUMNS, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for entry in rows:
        counts = outcomes.get(entry.key, {})
        if writer is not None:
            writer.writerow(
                {
                    "signal_type": entry.signal_type,
                    "signal": entry.signal,
                    "entry_id": entry.entry_id,
                    "labels": ";".join(entry.labels),
                    "action_hint": entry.action_hint,
                    "added_at": entry.added_at,
                    "provenance": orjson.dumps(entry.provenance).decode()
                    if entry.provenance
                    else "",
                    **{o: counts.get(o, 0) for o in ("confirm", "overturn", "escalate")},
                }
            )
        else:
            row = {k: v for k, v in orjson.loads(orjson.dumps(entry)).items() if k != "schema"}
            out.write(orjson.dumps({**row, "outcomes": counts}).decode() + "\n")
    return len(rows)
