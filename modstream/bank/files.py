"""Read bank entries from files, and write a bank (``bank export``) that reads back.

Formats read, by their content:

* modstream's CSV (``signal_type,signal[,entry_id,labels,...]``) and JSON lines;
* python-threatexchange's CSV (``signal_type,signal_str,collab,category,tags``, as its
  ``dataset --csv`` writes it) and its ``local_file`` format (``signal_type signal`` lines):
  their type names are read as modstream's (``video_md5`` is ``md5``, ``raw_text`` is
  ``text``); types modstream lacks and negative opinions are counted and skipped, a disputed
  opinion makes the entry review-only, tags become labels;
* one video's vPDQ: Meta's text (``frame_number,quality,pdq_hex,timestamp`` lines) or the
  JSON form python-threatexchange and HMA use; its entry id is the file name without suffix.

Written: modstream's CSV or JSON lines (labels, hint, time added, provenance, with the
entries' review outcome counts alongside, informational), or the two python-threatexchange
formats (vPDQ as its JSON form).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from modstream.contracts import BankEntry, ContractError
from modstream.formats.vpdq import format_vpdq_json, parse_vpdq
from modstream.signals import for_exchange_name
from modstream.signals import get as get_signal_type

FORMATS = ("csv", "jsonl", "threatexchange-csv", "local-file")
TX_CSV_COLUMNS = ["signal_type", "signal_str", "collab", "category", "tags"]


def read_bank_file(
    path: Path, bank: str, action_hint: str = "takedown", skipped: Counter[str] | None = None
) -> Iterator[BankEntry]:
    """Entries of one bank; signals are validated and canonicalized, errors name the line.
    Rows of python-threatexchange's formats that modstream cannot use are counted in
    ``skipped`` (by reason) instead."""
    text = path.read_text(encoding="utf-8")
    added_at = datetime.now(UTC).isoformat(timespec="seconds")
    head = text.lstrip()
    first_line = head.split("\n", 1)[0]
    lenient = False
    if path.suffix == ".vpdq" or _VPDQ_LINE.match(head) or head.startswith("["):
        rows: Iterator[tuple[int, dict]] = iter(
            [(1, {"signal_type": "vpdq", "signal": text, "entry_id": path.stem})]
        )
    elif path.suffix in (".jsonl", ".ndjson") or head.startswith("{"):
        rows = _json_rows(text)
    elif "signal_str" in first_line and "," in first_line:
        rows, lenient = _threatexchange_csv_rows(text), True
    elif "," in first_line and "signal_type" in first_line:
        rows = _csv_rows(text)
    else:
        rows, lenient = _local_file_rows(text), True
    skipped = skipped if skipped is not None else Counter()
    for line, row in rows:
        if row.get("skip"):
            skipped[row["skip"]] += 1
            continue
        try:
            signal_type = str(row["signal_type"]).strip()
            if lenient:
                kind = for_exchange_name(signal_type)
                if kind is None:
                    skipped[f"type {signal_type}"] += 1
                    continue
                signal_type = kind.name
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


#: A cell starting so is run as a formula by spreadsheets (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    """A text cell a spreadsheet would run is written behind a quote, as OWASP advises."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _uncell(value: str | None) -> str | None:
    """The text ``_cell`` wrote, read back as it was."""
    if value and value.startswith("'") and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


class _SafeWriter(csv.DictWriter):
    """A ``csv.DictWriter`` whose text cells cannot be formulas."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({k: _cell(v) for k, v in rowdict.items()})


def _csv_rows(text: str) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"signal_type", "signal"} <= set(reader.fieldnames):
        raise ContractError("CSV bank file needs a header with signal_type,signal")
    for row in reader:
        yield reader.line_num, {k: _uncell(v) for k, v in row.items()}


def _threatexchange_csv_rows(text: str) -> Iterator[tuple[int, dict]]:
    """python-threatexchange's ``dataset --csv``: the opinion category decides the hint."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"signal_type", "signal_str"} <= set(reader.fieldnames):
        raise ContractError("python-threatexchange CSV needs signal_type,signal_str columns")
    for raw_row in reader:
        row = {k: _uncell(v) for k, v in raw_row.items()}
        category = (row.get("category") or "").strip().upper()
        if category == "NEGATIVE_CLASS":
            yield reader.line_num, {"skip": "negative opinion"}
            continue
        collab = (row.get("collab") or "").strip()
        yield (
            reader.line_num,
            {
                "signal_type": row["signal_type"],
                "signal": row["signal_str"],
                "labels": (row.get("tags") or "").split(),
                "action_hint": "review" if category == "DISPUTED" else None,
                "provenance": {"collab": collab[:512]} if collab else None,
            },
        )


def _local_file_rows(text: str) -> Iterator[tuple[int, dict]]:
    """python-threatexchange's ``local_file`` exchange: ``signal_type signal`` a line."""
    for number, line in enumerate(text.splitlines(), start=1):
        signal_type, _, signal = line.strip().partition(" ")
        if signal_type and signal:
            yield number, {"signal_type": signal_type, "signal": signal}
        elif line.strip():
            raise ContractError(f"line {number}: expected 'signal_type signal'")


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
    """Write entries (sorted by signal type and id) in one of ``FORMATS``; ``outcomes``
    maps an entry's bank key to its review outcome counts. Returns the count written."""
    rows = sorted(entries, key=lambda e: (e.signal_type, e.entry_id))
    if fmt in ("threatexchange-csv", "local-file"):
        return _write_threatexchange(rows, out, fmt)
    writer = _SafeWriter(out, EXPORT_COLUMNS, lineterminator="\n") if fmt == "csv" else None
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


def _write_threatexchange(rows: list[BankEntry], out: TextIO, fmt: str) -> int:
    writer = _SafeWriter(out, TX_CSV_COLUMNS, lineterminator="\n") if fmt != "local-file" else None
    if writer is not None:
        writer.writeheader()
    for entry in rows:
        kind = get_signal_type(entry.signal_type)
        name = kind.exchange_names[0] if kind.exchange_names else kind.name
        signal = format_vpdq_json(parse_vpdq(entry.signal)) if kind.name == "vpdq" else entry.signal
        if writer is None:
            out.write(f"{name} {signal}\n")
            continue
        writer.writerow(
            {
                "signal_type": name,
                "signal_str": signal,
                "collab": entry.bank,
                "category": "INVESTIGATION_SEED"
                if entry.action_hint == "review"
                else "NEGATIVE_CLASS"
                if entry.action_hint == "allow"
                else "POSITIVE_CLASS",
                "tags": " ".join(label.replace(" ", "_") for label in entry.labels),
            }
        )
    return len(rows)
