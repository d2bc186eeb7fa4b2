"""Human review: a reviewer's outcome supersedes the automated decision, and what follows
from it. Pure functions over records; the review stage runs them and writes their effects.

* **Precedence** (Osprey's rule: manual beats automatic): the human verdict is recorded
  under the content id and under each exact hash (MD5, SHA-256) of the content's media, on
  that platform; the decide stage follows it for a redelivered event or an identical
  re-upload, whatever the automation finds.
* **Feedback**: a ``confirm`` of content that automation did not take down adds its signals
  to the platform's own bank (its ``auto_bank`` policy); an ``overturn`` of a match records a
  false positive: the content's exact hashes go to the platform's negative bank, which keeps
  that item from matching again while the entries still match everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from modstream.contracts import (
    BankConfig,
    BankEntry,
    Decision,
    Evidence,
    MediaSignals,
    Outcome,
    PlatformPolicy,
    ReviewNote,
    ReviewOutcome,
    Verdict,
    decision_id_for,
)

#: The verdict each outcome stands for: ``escalate`` keeps the content in review.
HUMAN_VERDICTS: dict[Outcome, Verdict] = {
    "confirm": "takedown",
    "overturn": "allow",
    "escalate": "review",
}
#: Signals that name one exact file: a human verdict follows the file through them.
EXACT_SIGNALS = ("md5", "sha256")
#: Signals a confirmed review adds to the platform's bank.
BANKABLE_SIGNALS = ("pdq", "md5", "vpdq")
#: Evidence of a bank entry that a reviewer's outcome judges (a quarantined entry's too).
MATCH_KINDS = ("hash_match", "text_match", "quarantined")
HUMAN_POLICY = "human"


def false_positive_bank(platform: str) -> str:
    """The negative bank where a platform's overturned matches go."""
    return f"fp-{platform}"


@dataclass(frozen=True)
class HumanVerdict:
    """The standing human verdict for a piece of content (``review.verdicts``, compacted; key
    ``<platform>/content/<content_id>`` or ``<platform>/<md5|sha256>/<hex>``)."""

    platform: str
    verdict: Verdict
    outcome: Outcome
    decision_id: str  # the human decision
    supersedes: str  # the automated decision it replaced
    decided_at: float

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def parse(cls, raw: bytes) -> HumanVerdict:
        return cls(**orjson.loads(raw))  # written by the review stage only


@dataclass(frozen=True)
class ReviewCase:
    """What an outcome acts on (``review.cases``, by decision id, written with each decision
    that goes to ``takedowns`` or ``reviews``): the automated decision and the signals of
    its content. The human decisions made from it are kept apart (``applied:<id>``), since
    the decide stage rewrites the case if the platform sends the same event again."""

    decision: Decision
    media: tuple[MediaSignals, ...]
    normalized_text: str | None

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def parse(cls, raw: bytes) -> ReviewCase:
        data = orjson.loads(raw)  # written by this pipeline
        return cls(
            decision=Decision.trusted(data["decision"]),
            media=tuple(MediaSignals(**m) for m in data["media"]),
            normalized_text=data["normalized_text"],
        )


def verdict_keys(platform: str, content_id: str, media: tuple[MediaSignals, ...]) -> list[str]:
    """Where a human verdict on this content is recorded and looked up."""
    keys = [f"{platform}/content/{content_id}"]
    for item in media:
        for name in EXACT_SIGNALS:
            computed = item.signals.get(name)
            if computed is not None:
                keys.append(f"{platform}/{name}/{computed['value']}")
    return keys


@dataclass
class HumanVerdicts:
    """The replicated ``review.verdicts``: what the decide stage consults for every event."""

    by_key: dict[str, HumanVerdict] = field(default_factory=dict)

    def apply(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.by_key.pop(key, None)
        else:
            self.by_key[key] = HumanVerdict.parse(value)

    def find(
        self, platform: str, content_id: str, media: tuple[MediaSignals, ...]
    ) -> HumanVerdict | None:
        """The latest human verdict on this content id or on any of its exact files."""
        if not self.by_key:  # the common case: no reviews yet, or none on this platform
            return None
        found = [self.by_key.get(k) for k in verdict_keys(platform, content_id, media)]
        return max((v for v in found if v is not None), key=lambda v: v.decided_at, default=None)


@dataclass(frozen=True)
class Effects:
    """What one outcome changes; the review stage writes all of it in one transaction."""

    decision: Decision  # the human decision, on ``decisions``
    also_to: tuple[str, ...]  # ``takedowns``, ``reviews``, ``reinstatements`` as it calls for
    verdicts: tuple[tuple[str, HumanVerdict], ...]
    bank_entries: tuple[BankEntry, ...]
    bank_configs: tuple[tuple[str, BankConfig], ...]
    entry_outcomes: tuple[tuple[str, str, str], ...]  # (bank, signal type, entry id)
    applied: tuple[str, ...]  # the human decisions made from the case, this one included


def human_decision_id(outcome: ReviewOutcome) -> str:
    """Deterministic: the same outcome submitted twice is one decision."""
    name = "\x00".join(
        (HUMAN_POLICY, outcome.decision_id, outcome.outcome, outcome.reviewer, outcome.decided_at)
    )
    return decision_id_for(outcome.platform, outcome.event_id, name)


#: Human decisions remembered per case to recognise a repeated outcome (a case is rarely
#: reviewed more than a few times: confirm, appeal, overturn).
MAX_APPLIED = 16


def apply_outcome(
    case: ReviewCase,
    outcome: ReviewOutcome,
    policy: PlatformPolicy,
    applied: tuple[str, ...] = (),
    pdq_min_quality: int = 50,
) -> Effects | None:
    """The effects of ``outcome`` on ``case``; None if it is one of the ``applied`` human
    decisions already. Raises ValueError if the outcome does not describe the case."""
    automated = case.decision
    mismatch = [
        name
        for name in ("event_id", "platform", "content_id")
        if getattr(outcome, name) != getattr(automated, name)
    ]
    if mismatch:
        raise ValueError(f"outcome's {', '.join(mismatch)} differ from decision's")
    decision_id = human_decision_id(outcome)
    if decision_id in applied:
        return None
    verdict = HUMAN_VERDICTS[outcome.outcome]
    reviewed_at = outcome.reviewed_at
    decision = Decision(
        decision_id=decision_id,
        event_id=automated.event_id,
        content_id=automated.content_id,
        platform=automated.platform,
        uploader_id=automated.uploader_id,
        verdict=verdict,
        evidence=(
            Evidence(
                kind="human_verdict",
                action=verdict,
                labels=outcome.labels,
                detail=f"{outcome.outcome} of automated decision {automated.decision_id}"
                + (f": {outcome.reason}" if outcome.reason else ""),
            ),
        ),
        policy_version=HUMAN_POLICY,
        decided_at=reviewed_at,
        source="human",
        supersedes=automated.decision_id,
        review=ReviewNote(
            outcome.outcome, outcome.reviewer, outcome.reason, outcome.labels, reviewed_at
        ),
    )
    standing = HumanVerdict(
        automated.platform, verdict, outcome.outcome, decision_id, automated.decision_id,
        reviewed_at,
    )  # fmt: skip
    matches = [e for e in automated.evidence if e.kind in MATCH_KINDS and e.entry_id and e.bank]
    entries: list[BankEntry] = []
    configs: list[tuple[str, BankConfig]] = []
    if outcome.outcome == "confirm" and automated.verdict != "takedown" and policy.auto_bank:
        entries += _bank_signals(case, outcome, decision_id, policy.auto_bank, pdq_min_quality)
    if outcome.outcome == "overturn" and matches:
        fp_bank = false_positive_bank(automated.platform)
        entries += _false_positives(case, outcome, decision_id, fp_bank, matches)
        configs.append((fp_bank, BankConfig(negative=True, platforms=(automated.platform,))))
    also_to = []
    if verdict == "takedown" and automated.verdict != "takedown":
        also_to.append("takedowns")
    if outcome.outcome == "escalate":
        also_to.append("reviews")
    if outcome.outcome == "overturn" and automated.verdict == "takedown":
        also_to.append("reinstatements")
    return Effects(
        decision=decision,
        also_to=tuple(also_to),
        verdicts=tuple(
            (key, standing)
            for key in verdict_keys(automated.platform, automated.content_id, case.media)
        ),
        bank_entries=tuple(entries),
        bank_configs=tuple(configs),
        entry_outcomes=tuple(
            dict.fromkeys((e.bank or "", e.signal_type or "", e.entry_id or "") for e in matches)
        ),
        applied=(*applied, decision_id)[-MAX_APPLIED:],
    )


def _provenance(outcome: ReviewOutcome, decision_id: str, **more: str) -> dict[str, str]:
    return {
        "source": "review",
        "decision_id": outcome.decision_id,
        "human_decision_id": decision_id,
        "reviewer": outcome.reviewer,
        "outcome": outcome.outcome,
        **more,
    }


def _bank_signals(
    case: ReviewCase, outcome: ReviewOutcome, decision_id: str, bank: str, pdq_min_quality: int
) -> list[BankEntry]:
    """The content's signals as entries of the platform's bank, so reposts match."""
    labels = outcome.labels or ("review_confirmed",)
    provenance = _provenance(outcome, decision_id)
    entries = []
    for item in case.media:
        for name in BANKABLE_SIGNALS:
            computed = item.signals.get(name)
            if computed is None:
                continue
            if name == "pdq" and computed.get("quality", 100) < pdq_min_quality:
                continue  # a flat image's hash matches too much to bank
            entry_id = f"{decision_id}.{item.media_id}"
            entries.append(
                BankEntry(bank, entry_id, name, computed["value"], labels, "takedown",
                          _iso(outcome.reviewed_at), provenance)
            )  # fmt: skip
            inner = computed.get("variants", {}).get("trimmed")
            if inner is not None:  # its bare picture too, for copies in other frames
                entries.append(
                    BankEntry(bank, f"{entry_id}.trimmed", name, inner, labels, "takedown",
                              _iso(outcome.reviewed_at), provenance)
                )  # fmt: skip
    if case.normalized_text:
        entries.append(
            BankEntry(bank, decision_id, "text", case.normalized_text, labels, "takedown",
                      _iso(outcome.reviewed_at), provenance)
        )  # fmt: skip
    return entries


def _false_positives(
    case: ReviewCase,
    outcome: ReviewOutcome,
    decision_id: str,
    bank: str,
    matches: list[Evidence],
) -> list[BankEntry]:
    """The matched content's exact files (and text, for a text match) in the negative bank,
    each saying which entries it was wrongly matched by."""
    entries = []
    by_media: dict[str | None, list[str]] = {}
    for match in matches:
        by_media.setdefault(match.media_id, []).append(
            f"{match.bank}/{match.signal_type}/{match.entry_id}"
        )
    for item in case.media:
        wrongly = by_media.get(item.media_id)
        if not wrongly:
            continue
        provenance = _provenance(outcome, decision_id, matched=",".join(wrongly)[:512])
        for name in EXACT_SIGNALS:
            computed = item.signals.get(name)
            if computed is not None:
                entries.append(
                    BankEntry(bank, computed["value"], name, computed["value"],
                              ("false_positive",), "allow", _iso(outcome.reviewed_at),
                              provenance)
                )  # fmt: skip
    text_matched = by_media.get(None)
    if text_matched and case.normalized_text:
        provenance = _provenance(outcome, decision_id, matched=",".join(text_matched)[:512])
        entries.append(
            BankEntry(bank, decision_id, "text", case.normalized_text, ("false_positive",),
                      "allow", _iso(outcome.reviewed_at), provenance)
        )  # fmt: skip
    return entries


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def entry_outcome_counts(raw: bytes | None) -> dict[str, int]:
    """The per-entry outcome counts kept in ``review.cases`` (``entry:<bank key>``)."""
    counts: dict[str, Any] = orjson.loads(raw) if raw else {}
    return {o: int(counts.get(o, 0)) for o in HUMAN_VERDICTS}
