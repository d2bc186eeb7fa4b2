"""The moderation engine without Kafka: hash media, gather evidence, decide.

The Faust shell and the ``modstream scan`` command both call these functions, so what the CLI
shows for a file is exactly what the stream would decide for it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from modstream.bank.bank import Bank, Match
from modstream.bank.controls import BankControls
from modstream.contracts import (
    ComputedSignal,
    Decision,
    Evidence,
    MediaError,
    MediaSignals,
    TextScore,
    UploadEvent,
    decision_id_for,
)
from modstream.decide import policy
from modstream.decide.policy import POLICY_VERSION, PolicyConfig
from modstream.decide.review import HumanVerdict
from modstream.formats.text import normalize_text
from modstream.formats.vpdq import parse_vpdq
from modstream.hashing.content import Content
from modstream.hashing.ocr import OcrPolicy
from modstream.hashing.video import VideoSampling
from modstream.ingest.urls import redact_urls
from modstream.matching.video import FRAME_DISTANCE
from modstream.settings import Settings
from modstream.signals import get as get_signal_type
from modstream.signals import registry
from modstream.signals.base import Assessment
from modstream.text.classifier import LinearTextClassifier
from modstream.text.lexicon import Lexicon
from modstream.text.scorer import TextScorer

# (signal type, signal) -> the bank entries it matched
Lookups = dict[tuple[str, str], list[Match]]
#: What a matching variant of an image's hash says about the upload (evidence detail).
VARIANTS = {
    "mirror": "as a mirror image",
    "flip": "upside down",
    "rot180": "rotated 180 degrees",
    "rot90cw": "rotated 90 degrees clockwise",
    "rot90ccw": "rotated 90 degrees counter-clockwise",
    "transpose": "transposed (mirrored and rotated)",
    "transverse": "transversed (mirrored and rotated)",
    "trimmed": "inside bars or padding, once trimmed",
}


def hash_media(
    media_id: str,
    kind: str,
    data: bytes | Path,
    max_pixels: int,
    video: VideoSampling | None = None,
    ocr: OcrPolicy | None = None,
) -> MediaSignals:
    """Every applicable signal of one piece of media. CPU-bound: run it in a process pool.

    Byte signals (MD5, SHA-256) are kept even when decoding fails, so a banked copy of a
    corrupt file still matches; the failure is reported next to them.
    """
    content = Content(data, kind, max_pixels, video, ocr)
    signals: dict[str, ComputedSignal] = {}
    applicable = [t for t in registry().values() if t.source in ("bytes", kind)]
    # Byte signals first, so they are there even if decoding fails.
    for signal_type in sorted(applicable, key=lambda t: t.source != "bytes"):
        try:
            value = signal_type.compute(content)
        except Exception as exc:  # one item's failure is that item's error, never the event's
            error = media_failure(exc)
            return MediaSignals(media_id, kind, signals, str(error), error.reason)
        if value is not None:
            signals[signal_type.name] = value
    return MediaSignals(media_id, kind, signals)


def media_failure(exc: Exception) -> MediaError:
    """Any failure while getting or hashing one media item, as that item's MediaError: the
    expected ones keep their reason, the rest get a bounded set of labels (for metrics) and a
    message with the URLs in it redacted."""
    if isinstance(exc, MediaError):
        return MediaError(exc.reason, redact_urls(str(exc)))
    if isinstance(exc, MemoryError):
        return MediaError("too_costly", "out of memory while processing the media")
    if isinstance(exc, OSError | RuntimeError):  # unreadable files, symlink loops, long names
        return MediaError("unreadable", redact_urls(f"{type(exc).__name__}: {exc}"))
    return MediaError("internal_error", redact_urls(f"{type(exc).__name__}: {exc}"))


def score_texts(
    model: Path | None, texts: Sequence[str], lexicon: Path | None = None
) -> list[tuple[str, TextScore]]:
    """Each post normalised (as it is matched against known texts) and scored by the
    classifier: CPU-bound like hashing, so the stream runs it in the same process pool,
    where each process loads the model once. The normalised text travels on to the decide
    stage, which matches it without normalising again."""
    scorer = _classifier(model, lexicon)
    scored = []
    for text in texts:
        normalized = normalize_text(text)
        scored.append((normalized, scorer.score(text, normalized)))
    return scored


@functools.cache
def _classifier(model: Path | None, lexicon: Path | None = None) -> LinearTextClassifier:
    """The model with the packaged lexicon of coded terms, and a platform's merged over it."""
    return LinearTextClassifier.load(model, Lexicon.load(lexicon))


def failed_media(media_id: str, kind: str, error: MediaError) -> MediaSignals:
    return MediaSignals(media_id, kind, {}, str(error), error.reason)


@dataclass
class Engine:
    """Matches signals against the bank, scores text, and applies the policy."""

    bank: Bank
    scorer: TextScorer
    config: PolicyConfig
    pdq_min_quality: int = 50

    @property
    def controls(self) -> BankControls:
        """The banks' controls (``bank.config``, replicated): the bank's own."""
        return self.bank.controls

    @classmethod
    def from_settings(cls, settings: Settings, bank: Bank) -> Engine:
        return cls(
            bank=bank,
            scorer=_classifier(settings.text_model, settings.text_lexicon),
            config=PolicyConfig(
                text_review_score=settings.text_review_score,
                text_takedown_score=settings.text_takedown_score,
                on_media_error=settings.on_media_error,
                repeat_strikes=settings.repeat_strikes,
            ),
            pdq_min_quality=settings.pdq_min_quality,
        )

    def lookup(self, batch: Iterable[Sequence[MediaSignals]], texts: Iterable[str] = ()) -> Lookups:
        """Bank matches of every usable hash and normalised text in a batch of events: one
        index search per signal type for the whole batch, which is where a large bank's cost
        is amortized. Run it off the event loop."""
        wanted: dict[str, dict[str, None]] = {}  # at the review distance
        extra: dict[str, dict[str, None]] = {}  # variants: at the takedown distance only
        for normalized in texts:
            if normalized:
                wanted.setdefault("text", {})[normalized] = None
        for media in batch:
            for item in media:
                for name, computed in item.signals.items():
                    if name == "ocr":  # text inside the picture: matched as known text
                        wanted.setdefault("text", {})[computed["value"]] = None
                    elif get_signal_type(name).usable(computed, self.pdq_min_quality):
                        wanted.setdefault(name, {})[computed["value"]] = None
                        variants = computed.get("variants", {}).values()
                        extra.setdefault(name, {}).update(dict.fromkeys(variants))
        found: Lookups = {}
        for name, values in wanted.items():
            signals = list(values)
            for signal, matches in zip(signals, self.bank.match_many(name, signals), strict=True):
                found[(name, signal)] = assessed(name, signal, matches)
        for name, values in extra.items():
            signals = [v for v in values if (name, v) not in found]
            near = self.bank.match_many(name, signals, within="takedown")
            for signal, matches in zip(signals, near, strict=True):
                found[(name, signal)] = assessed(name, signal, matches)
        found.update(self._across_media(list(wanted.get("pdq", {})), list(wanted.get("vpdq", {}))))
        return found

    def _across_media(self, images: list[str], videos: list[str]) -> Lookups:
        """Stills of banked videos among the images, banked images among the videos'
        frames (those of usable quality), keyed ``("still_of_video", pdq)`` and
        ``("image_in_video", vpdq)``."""
        found: Lookups = {}
        for image, stills in zip(images, self.bank.stills_of_videos(images), strict=True):
            found[("still_of_video", image)] = stills
        frames = [
            [f for f in parse_vpdq(video) if f.quality >= self.pdq_min_quality] for video in videos
        ]
        for video, seen in zip(videos, self.bank.images_in_videos(frames), strict=True):
            found[("image_in_video", video)] = [
                replace(m, assessment=Assessment(detail=f"at {at:.1f} s", parts=({"at": at},)))
                for m, at in seen
            ]
        return found

    def evidence(
        self,
        event: UploadEvent,
        media: Sequence[MediaSignals],
        lookups: Lookups | None = None,
        text_score: TextScore | None = None,
        normalized_text: str | None = None,
        at: float | None = None,
    ) -> list[Evidence]:
        """Every reason for or against action found in the event, most severe first, as of
        ``at`` (epoch seconds, for entries disabled until a time; now if None).
        ``lookups`` (from ``lookup``) saves searching the bank again per hash and text, and
        ``text_score`` and ``normalized_text`` (from ``score_texts``) scoring and normalising
        the text again."""
        found: list[Evidence] = []
        for item in media:
            if item.error is not None:
                found.append(
                    Evidence(
                        kind="media_error",
                        action=self.config.on_media_error,
                        media_id=item.media_id,
                        detail=f"{item.error_reason}: {item.error}",
                    )
                )
            item_matches = [
                (name, computed["value"], match, variant)
                for name, computed in item.signals.items()
                for variant, match in self._hash_matches(name, computed, lookups or {})
            ]
            found.extend(
                self._screened(event.platform, "hash_match", item_matches, item.media_id, at)
            )
            found.extend(self._cross_media_evidence(item, lookups or {}))
            read = item.signals.get("ocr")
            if read is not None:
                found.extend(self._ocr_evidence(event.platform, item.media_id, read["value"],
                                                lookups or {}, at))  # fmt: skip
            cut = item.signals.get("vpdq")
            if cut is not None and cut.get("truncated"):
                found.append(
                    Evidence(
                        kind="video_cut",
                        action="allow",
                        media_id=item.media_id,
                        detail=f"only the first {cut.get('hashed_seconds', 0):.0f} s of "
                        f"{cut.get('duration', 0):.0f} s were hashed "
                        "(MODSTREAM_VIDEO_MAX_SECONDS)",
                    )
                )
        if event.text:
            found.extend(
                self._text_evidence(
                    event.platform, event.text, text_score, normalized_text, lookups or {}, at
                )
            )
        return sorted(found, key=lambda e: -policy.SEVERITY[e.action])

    def decide(
        self,
        event: UploadEvent,
        media: Sequence[MediaSignals],
        decided_at: float,
        prior_strikes: int = 0,
        lookups: Lookups | None = None,
        text_score: TextScore | None = None,
        normalized_text: str | None = None,
        human: HumanVerdict | None = None,
    ) -> Decision:
        """``human``: a reviewer's standing verdict on this content, which decides it whatever
        the automation finds (the evidence is still gathered and shown)."""
        evidence = self.evidence(event, media, lookups, text_score, normalized_text, decided_at)
        repeat = policy.repeat_action(prior_strikes, self.config)
        if repeat != "allow":
            evidence.append(
                Evidence(
                    kind="repeat_uploader",
                    action=repeat,
                    score=float(prior_strikes),
                    threshold=self.config.repeat_strikes,
                    detail=f"{prior_strikes} matched uploads in the recent window",
                )
            )
        verdict = policy.verdict_for(evidence)
        if human is not None:
            verdict = human.verdict
            evidence.insert(
                0,
                Evidence(
                    kind="human_verdict",
                    action=human.verdict,
                    detail=f"a reviewer's {human.outcome} stands for this content "
                    f"(decision {human.decision_id})",
                ),
            )
        return Decision(
            decision_id=decision_id_for(event.platform, event.event_id, POLICY_VERSION),
            event_id=event.event_id,
            content_id=event.content_id,
            platform=event.platform,
            uploader_id=event.uploader_id,
            verdict=verdict,
            evidence=tuple(evidence),
            policy_version=POLICY_VERSION,
            decided_at=decided_at,
            media_errors=tuple(
                {"media_id": m.media_id, "reason": m.error_reason or "", "error": m.error}
                for m in media
                if m.error is not None
            ),
        )

    def _hash_matches(
        self, name: str, computed: ComputedSignal, lookups: Lookups
    ) -> list[tuple[str | None, Match]]:
        """``(variant, match)`` per bank entry: the nearest of the value (variant None) and
        its variants (other orientations, the picture inside borders), the value first on
        a tie. Variants count only within the takedown distance: each is one more guess
        per image, and the review band is for near misses of the picture as it came."""
        if not get_signal_type(name).usable(computed, self.pdq_min_quality):
            return []
        queries: list[tuple[str | None, str]] = [(None, computed["value"])]
        queries += list(computed.get("variants", {}).items())
        best: dict[str, tuple[str | None, Match]] = {}
        for variant, signal in queries:
            for match in self._matches(name, signal, lookups):
                if variant is not None and match.distance > match.thresholds.takedown:
                    continue  # a variant is another guess: it acts, or says nothing
                key = match.entry.key
                if key not in best or match.distance < best[key][1].distance:
                    best[key] = (variant, match)
        return list(best.values())

    def _screened(
        self,
        platform: str,
        kind: Literal["hash_match", "text_match"],
        found: Sequence[tuple[str, str, Match, str | None]],
        media_id: str | None,
        at: float | None,
    ) -> list[Evidence]:
        """One item's matches ``(signal type, query signal, match, variant)`` as evidence,
        under the banks' controls (``bank.config``); a match of a variant (another
        orientation, the picture inside borders) says so:

        * a disabled bank, content outside a bank's ``enabled_ratio`` share, and an entry
          disabled until later are not looked at;
        * a confident match of a negative bank that protects this platform turns the
          matches of the banks it suppresses into ``suppressed_match`` (action ``allow``),
          each naming the negative entry; negative banks are never evidence themselves;
        * a bank's ``action`` replaces its entries' hints; a ``shadow`` bank's matches are
          ``shadow_match`` (recorded with what they would do, never acting);
        * a quarantined entry's acting matches are ``quarantined``, sent to review.
        """
        controls = self.controls
        now = time.time() if at is None else at
        found = [
            (name, signal, match, variant)
            for name, signal, match, variant in found
            if controls.applies(match.entry.bank, signal)
            and (controls.entry(match.entry.key).disabled_until or 0.0) <= now
        ]
        shields = [
            (name, match, config)
            for name, _, match, _ in found
            if (config := controls.negative_for(match.entry.bank, platform)) is not None
            and match.distance <= match.thresholds.takedown
        ]
        out = []
        for name, _, match, variant in found:
            if controls.is_negative(match.entry.bank):
                continue
            config = controls.bank(match.entry.bank)
            evidence = match_evidence(kind, name, match, media_id, config.action)
            if variant is not None:
                action = evidence.action
                if action == "takedown" and not get_signal_type(name).variants_act:
                    action = "review"
                evidence = replace(
                    evidence,
                    action=action,
                    parts=(*evidence.parts, {"variant": variant}),
                    detail=evidence.detail or f"matched {VARIANTS.get(variant, variant)}",
                )
            shield = next(
                (s for s in shields if not s[2].suppresses or match.entry.bank in s[2].suppresses),
                None,
            )
            control = controls.entry(match.entry.key)
            if shield is not None:
                by = shield[1].entry
                evidence = replace(
                    evidence,
                    kind="suppressed_match",
                    action="allow",
                    parts=(*evidence.parts, {"suppressed_by": by.key, "by_signal_type": shield[0]}),
                    detail=f"suppressed by negative bank {by.bank} (entry {by.entry_id})",
                )
            elif config.action == "shadow":
                evidence = replace(
                    evidence,
                    kind="shadow_match",
                    action="allow",
                    parts=(*evidence.parts, {"would": evidence.action}),
                    detail="shadow bank: recorded, never acted on",
                )
            elif control.quarantined_at is not None and evidence.action != "allow":
                evidence = replace(
                    evidence,
                    kind="quarantined",
                    action="review",
                    parts=(*evidence.parts, {"would": evidence.action}),
                    detail=f"entry quarantined ({control.reason}); it acts again once a "
                    "person releases it (modstream bank release)",
                )
            out.append(evidence)
        return out

    def _ocr_evidence(
        self, platform: str, media_id: str, text: str, lookups: Lookups, at: float | None
    ) -> list[Evidence]:
        """Text read inside an image (already normalized), judged as a post's text is, each
        piece of evidence naming the image and saying the text was read from it."""
        found = self._text_evidence(
            platform, text, None, text, lookups, at, media_id, "text read inside the image; "
        )
        return [replace(e, parts=(*e.parts, {"source": "ocr"})) for e in found]

    def _cross_media_evidence(self, item: MediaSignals, lookups: Lookups) -> list[Evidence]:
        """An image that is a still of a banked video; banked images inside a video."""
        out = []
        pdq, vpdq = item.signals.get("pdq"), item.signals.get("vpdq")
        if pdq is not None and get_signal_type("pdq").usable(pdq, self.pdq_min_quality):
            key = ("still_of_video", pdq["value"])
            stills = lookups.get(key)
            if stills is None:
                stills = self._across_media([pdq["value"]], [])[key]
            for match in stills:
                what = f"{match.entry.bank}/{match.entry.entry_id}"
                detail = f"a still of banked video {what}: a frame {match.distance} bits away"
                out.append(
                    self._cross_evidence("still_of_video", "pdq", match, item, pdq["value"], detail)
                )
        if vpdq is not None:
            key = ("image_in_video", vpdq["value"])
            inside = lookups.get(key)
            if inside is None:
                inside = self._across_media([], [vpdq["value"]])[key]
            for match in inside:
                what = f"{match.entry.bank}/{match.entry.entry_id}"
                detail = f"banked image {what} is in this video {match.assessment.detail}"
                out.append(
                    self._cross_evidence(
                        "image_in_video", "vpdq", match, item, vpdq["value"], detail
                    )
                )
        return [e for e in out if e is not None]

    def _cross_evidence(
        self,
        kind: Literal["still_of_video", "image_in_video"],
        signal_type: str,
        match: Match,
        item: MediaSignals,
        signal: str,
        detail: str,
    ) -> Evidence | None:
        """Evidence of a match across media, under the banks' controls: not for a disabled
        bank or content outside its share, nothing from negative banks, shadow banks only
        record."""
        controls, bank = self.controls, match.entry.bank
        if controls.is_negative(bank) or not controls.applies(bank, signal):
            return None
        action = policy.CROSS_MEDIA_ACTION
        shadow: tuple[dict[str, Any], ...] = ()
        if controls.bank(bank).action == "shadow":
            shadow, action = ({"would": action},), "allow"
        return Evidence(
            kind=kind,
            action=action,
            media_id=item.media_id,
            signal_type=signal_type,
            bank=bank,
            entry_id=match.entry.entry_id,
            labels=match.entry.labels,
            distance=match.distance,
            threshold=FRAME_DISTANCE,
            parts=(*match.assessment.parts, *shadow),
            detail=detail,
        )

    def _matches(self, name: str, signal: str, lookups: Lookups) -> list[Match]:
        """The assessed bank matches of one signal: from a batch's lookups, or searched now."""
        found = lookups.get((name, signal))
        return found if found is not None else assessed(name, signal, self.bank.match(name, signal))

    def _text_evidence(
        self,
        platform: str,
        text: str,
        scored: TextScore | None,
        normalized: str | None,
        lookups: Lookups,
        at: float | None,
        media_id: str | None = None,
        where: str = "",
    ) -> list[Evidence]:
        """Known-text matches and the model's score of a text: a post's, or (``media_id``,
        ``where`` saying so in the score's detail) one read inside an image."""
        out = []
        if normalized is None:
            normalized = normalize_text(text)
        if normalized:
            matches = [
                ("text", normalized, m, None) for m in self._matches("text", normalized, lookups)
            ]
            out += self._screened(platform, "text_match", matches, media_id, at)
        if scored is None:
            scored = self.scorer.score(text, normalized)
        if scored.parts:
            out.append(
                Evidence(
                    kind="text_score",
                    action=policy.text_action(scored.score, self.config),
                    media_id=media_id,
                    score=scored.score,
                    threshold=None,
                    parts=scored.parts,
                    detail=f"{where}review at >= {self.config.text_review_score}",
                )
            )
        return out


def assessed(signal_type: str, signal: str, matches: list[Match]) -> list[Match]:
    """The matches with their signal type's assessment, less those that match too little of
    the query for their bank (``min_query_share``, vPDQ). Run where the lookups run (off the
    event loop): a video's assessment compares frames."""
    kind = get_signal_type(signal_type)
    out = []
    for match in matches:
        assessment = kind.assess(signal, match.entry.signal, match.distance)
        share = assessment.query_share
        if share is None or share >= match.thresholds.min_query_share:
            out.append(replace(match, assessment=assessment))
    return out


def match_evidence(
    kind: Literal["hash_match", "text_match"],
    signal_type: str,
    match: Match,
    media_id: str | None = None,
    bank_action: str | None = None,
) -> Evidence:
    """Evidence of one bank match: within the bank's takedown distance its hint applies (the
    bank's ``action`` when it sets one, but an allowlist entry's ``allow`` stays), within the
    review distance it goes to review."""
    hint = match.entry.action_hint
    if bank_action in ("takedown", "review") and hint != "allow":
        hint = "takedown" if bank_action == "takedown" else "review"
    return Evidence(
        kind=kind,
        action=policy.hash_action(
            match.distance, match.thresholds.takedown, match.thresholds.review, hint
        ),
        signal_type=signal_type,
        bank=match.entry.bank,
        entry_id=match.entry.entry_id,
        labels=match.entry.labels,
        distance=match.distance,
        threshold=match.thresholds.takedown,
        parts=match.assessment.parts,
        detail=match.assessment.detail,
        media_id=media_id,
    )


def struck(decision: Decision) -> bool:
    """Whether the decision counts against the uploader: a takedown on its own evidence (a
    reviewer's confirm counts; a reviewer's overturn clears whatever matched)."""
    return decision.verdict == "takedown" and any(
        e.action == "takedown" and e.kind != "repeat_uploader" for e in decision.evidence
    )
