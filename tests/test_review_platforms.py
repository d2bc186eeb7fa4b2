"""Review outcomes stay inside their platform (issue 24): with ``MODSTREAM_PLATFORMS``, a
platform's decisions to review go to its own ``reviews.platform.<p>``, its outcomes come
from its own ``review.outcomes.platform.<p>``, and an outcome there for another platform's
decision changes nothing. In memory; through real workers: tests/test_platform_kafka.py."""

from __future__ import annotations

import orjson
from stages import loop, records
from streaming import inline
from test_review import PROPAGANDA, ROCKET, SHARED, decided, outcome, sent

from modstream.contracts import (
    HASHED_TOPIC,
    REINSTATEMENTS_TOPIC,
    REVIEW_OUTCOMES_TOPIC,
    REVIEWS_TOPIC,
)
from modstream.ingest.trust import outcomes_topic, platform_topic, reviews_topic
from modstream.settings import Settings
from modstream.stream.topics import topic_specs


def event(platform: str, event_id: str, **body) -> tuple[bytes, bytes]:
    raw = {"schema": 1, "event_id": event_id, "platform": platform, "content_id": f"c-{event_id}",
           "uploader_id": "u1", "created_at": "2026-11-26T10:00:00Z", **body}  # fmt: skip
    return b"k", orjson.dumps(raw)


async def post(lp, platform: str, *events: tuple[bytes, bytes]) -> None:
    before = len(lp.out.sent[HASHED_TOPIC])
    await lp.hash.process(records(platform_topic(platform), list(events)))
    await lp.decide.process(lp.out.as_records(HASHED_TOPIC)[before:])


async def test_a_forged_outcome_on_another_platforms_topic_changes_nothing(tmp_path) -> None:
    lp = loop(tmp_path, [SHARED], platforms=("alpha", "victim"))
    await post(lp, "victim", event("victim", "v1", media=inline(ROCKET)))
    await post(lp, "victim", event("victim", "v2", text=PROPAGANDA))
    taken = decided(lp, "v1")
    assert taken["verdict"] == "takedown"
    # Only the victim's own review topic carries its decisions to review.
    assert [d["event_id"] for d in sent(lp, reviews_topic("victim"))] == ["v2"]
    assert sent(lp, REVIEWS_TOPIC) == [] and sent(lp, reviews_topic("alpha")) == []

    copied = orjson.loads(outcome(taken, "overturn"))  # ids copied from the victim's decision
    as_alpha = orjson.dumps({**copied, "platform": "alpha"})
    await lp.outcomes([outcome(taken, "overturn"), as_alpha], topic=outcomes_topic("alpha"))
    await lp.outcomes([outcome(taken, "overturn")], topic=REVIEW_OUTCOMES_TOPIC)
    assert [reason for _, _, reason, _ in lp.out.dead] == [
        "platform_mismatch",  # alpha's topic speaks for alpha only
        "outcome_mismatch",  # alpha's outcome names a decision of the victim's
        "unbound_topic",  # with platforms bound, the shared topic is refused
    ]
    assert sent(lp, REINSTATEMENTS_TOPIC) == [] and lp.bank.sizes() == {("shared", "pdq"): 1}
    assert decided(lp, "v1")["source"] == "automated"  # the takedown stands

    await lp.outcomes([outcome(taken, "overturn")], topic=outcomes_topic("victim"))
    assert [d["event_id"] for d in sent(lp, REINSTATEMENTS_TOPIC)] == ["v1"]
    assert ("fp-victim", "md5") in lp.bank.sizes()


def test_bound_platforms_get_their_own_review_topics() -> None:
    names = {spec.name for spec in topic_specs(Settings(platforms=("alpha",), topic_prefix="t."))}
    assert {"t.reviews.platform.alpha", "t.review.outcomes.platform.alpha"} <= names


async def test_path_media_of_a_bound_platform_stay_under_its_own_sub_root(tmp_path) -> None:
    """alpha's events cannot read the victim's files, nor learn whether one exists or how
    large it is: every path outside alpha's sub-root is one refusal."""
    root = tmp_path / "media"
    (root / "victim").mkdir(parents=True)
    (root / "alpha").mkdir()
    (root / "victim" / "secret.jpg").write_bytes(ROCKET)
    lp = loop(tmp_path, [SHARED], platforms=("alpha", "victim"), media_root=root)
    probes = ["../victim/secret.jpg", "../victim/none.jpg", str(root / "victim" / "secret.jpg")]
    for n, path in enumerate(probes):
        media = [{"media_id": "m", "kind": "image", "path": path}]
        await post(lp, "alpha", event("alpha", f"a{n}", media=media))
    errors = [decided(lp, f"a{n}")["media_errors"] for n in range(len(probes))]
    assert {(e[0]["reason"], e[0]["error"].split(" is ")[-1]) for e in errors} == {
        ("path_outside_root", "outside the media root")
    }
    await post(lp, "victim", event("victim", "v1", media=[{"media_id": "m", "kind": "image",
                                                          "path": "secret.jpg"}]))  # fmt: skip
    assert decided(lp, "v1")["verdict"] == "takedown"


def test_a_platform_name_that_is_no_directory_has_no_media_root(tmp_path) -> None:
    from modstream.ingest.sources import platform_root

    assert platform_root(tmp_path, "alpha", True) == tmp_path / "alpha"
    assert platform_root(tmp_path, "alpha", False) == tmp_path
    assert platform_root(tmp_path, "..", True) is None
