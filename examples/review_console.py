"""A review tool in 80 lines: what plugs into modstream's review loop.

It reads decisions that need a person from ``reviews`` (and, to audit them, ``takedowns``),
shows each one, asks the reviewer, and publishes the outcome on ``review.outcomes``. It uses
aiokafka only, as any tool in any language would use its Kafka client: nothing of modstream
is imported.

    python examples/review_console.py --reviewer alice [--topic reviews] [--prefix P]
    python examples/review_console.py --reviewer alice --platform forum   # bound platforms

With ``MODSTREAM_PLATFORMS`` set, platform ``forum``'s tool reads ``reviews.platform.forum``
and writes ``review.outcomes.platform.forum``: its Kafka principal may touch no other.
    python examples/review_console.py --reviewer bot --decide confirm --max 1   # unattended
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

CHOICES = {"c": "confirm", "o": "overturn", "e": "escalate"}


def show(decision: dict) -> None:
    print(f"\n{decision['verdict'].upper()} {decision['platform']}/{decision['content_id']}")
    for evidence in decision["evidence"]:
        where = evidence.get("bank") and f" {evidence['bank']}/{evidence['entry_id']}"
        print(f"  - {evidence['kind']} -> {evidence['action']}{where or ''}"
              f" {evidence.get('detail') or ''}")  # fmt: skip


def outcome_for(decision: dict, outcome: str, reviewer: str, reason: str) -> bytes:
    return json.dumps(
        {
            "schema": 1,
            "decision_id": decision["decision_id"],
            "event_id": decision["event_id"],
            "platform": decision["platform"],
            "content_id": decision["content_id"],
            "outcome": outcome,
            "reviewer": reviewer,
            "reason": reason,
            "labels": [],
            "decided_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def main(args: argparse.Namespace) -> None:
    broker = os.environ.get("MODSTREAM_BROKER", "127.0.0.1:9092")
    reviews, outcomes = args.topic, "review.outcomes"
    if args.platform:
        reviews, outcomes = (
            f"reviews.platform.{args.platform}",
            (f"review.outcomes.platform.{args.platform}"),
        )
    consumer = AIOKafkaConsumer(
        args.prefix + reviews,
        bootstrap_servers=broker,
        group_id=f"{args.prefix}review-console",  # each decision to one reviewer of the group
        isolation_level="read_committed",  # modstream writes in transactions
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    done = 0
    try:
        async for record in consumer:
            decision = json.loads(record.value)
            if decision.get("source") == "human":
                continue  # already a person's decision (an escalation goes to its own queue)
            show(decision)
            answer = args.decide or CHOICES.get(input("[c]onfirm [o]verturn [e]scalate? ")[:1])
            if answer is None:
                continue
            reason = args.reason if args.decide else input("reason: ")
            key = decision["decision_id"].encode()
            await producer.send_and_wait(
                args.prefix + outcomes,
                outcome_for(decision, answer, args.reviewer, reason),
                key=key,
            )
            await consumer.commit()  # only once the outcome is in Kafka
            done += 1
            if args.max and done >= args.max:
                return
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviewer", required=True)
    parser.add_argument("--topic", default="reviews")
    parser.add_argument("--platform", help="a bound platform: its own review topics")
    parser.add_argument("--prefix", default=os.environ.get("MODSTREAM_TOPIC_PREFIX", ""))
    parser.add_argument("--decide", choices=sorted(CHOICES.values()), help="answer every one")
    parser.add_argument("--reason", default="")
    parser.add_argument("--max", type=int, default=0, help="stop after this many outcomes")
    asyncio.run(main(parser.parse_args()))
