"""``modstream`` command line: run the broker and workers, manage banks, try the engine."""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

import orjson

from modstream.contracts import ContractError, UploadEvent, bank_key, dumps
from modstream.settings import Settings


class UserError(Exception):
    """Printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit status 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.run is not cmd_worker:  # the client library's retry chatter is not for users
        client_log = logging.getLogger("aiokafka")
        client_log.propagate = False
        client_log.addHandler(logging.NullHandler())
    try:
        settings = Settings.from_env()
        return int(args.run(args, settings) or 0)
    except (UserError, ContractError, ValueError, OSError) as exc:
        print(f"modstream: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_kafka_failure(exc):
            raise
        print(f"modstream: error: Kafka: {_one_line(exc)}", file=sys.stderr)
        return 2


def _is_kafka_failure(exc: Exception) -> bool:
    """Errors of the broker or the client library that reach here outside ``_run``."""
    from aiokafka.errors import KafkaError

    from modstream.stream.client import MissingTopicError

    return isinstance(exc, KafkaError | MissingTopicError)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modstream", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    kafka = commands.add_parser("kafka", help="run a local Apache Kafka broker (KRaft)")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.set_defaults(run=cmd_kafka)

    worker = commands.add_parser("worker", help="run a pipeline worker")
    worker.add_argument("--web-port", type=int, help="metrics/health port (MODSTREAM_WEB_PORT)")
    worker.set_defaults(run=cmd_worker)

    bank = commands.add_parser("bank", help="publish bank entries to the hashbank topic")
    bank_commands = bank.add_subparsers(required=True, metavar="ACTION")
    imp = bank_commands.add_parser(
        "import",
        help="import a bank file: CSV, JSON lines, python-threatexchange's CSV or local_file "
        "format, a vPDQ file (text or JSON)",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--bank", required=True)
    imp.add_argument("--action-hint", choices=["takedown", "review", "allow"], default="takedown")
    imp.set_defaults(run=cmd_bank_import)
    rem = bank_commands.add_parser("remove", help="remove entries (publishes tombstones)")
    rem.add_argument("--bank", required=True)
    rem.add_argument("--signal-type", required=True)
    rem.add_argument("entry_ids", nargs="+")
    rem.set_defaults(run=cmd_bank_remove)

    config = bank_commands.add_parser(
        "config", help="change a bank's controls on bank.config (what is not given stays)"
    )
    config.add_argument("name")
    config.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None)
    config.add_argument(
        "--ratio", type=float, help="share of content the bank applies to, 0..1 (rollout)"
    )
    config.add_argument(
        "--action",
        choices=["takedown", "review", "shadow", "entries"],
        help="what its matches do within the takedown distance (entries: each entry's hint)",
    )
    config.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="TYPE:takedown=N,review=M",
        help="distances for one signal type (TYPE:default removes them)",
    )
    config.add_argument(
        "--negative",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the bank lists content known not to violate (an allowlist)",
    )
    config.add_argument(
        "--platform", action="append", help="a negative bank protects only these (all)"
    )
    config.add_argument(
        "--suppresses", action="append", help="the positive banks a negative one overrides (all)"
    )
    config.set_defaults(run=cmd_bank_config)
    show = bank_commands.add_parser(
        "show", help="a bank's controls, entries per type, entries disabled or quarantined"
    )
    show.add_argument("name")
    show.set_defaults(run=cmd_bank_show)
    disable = bank_commands.add_parser(
        "disable", help="switch one entry off until a time (a whole bank: config --no-enabled)"
    )
    disable.add_argument("key", metavar="BANK/TYPE/ENTRY_ID")
    until = disable.add_mutually_exclusive_group(required=True)
    until.add_argument("--for", dest="for_s", type=float, metavar="SECONDS")
    until.add_argument("--until", metavar="ISO_TIME")
    disable.set_defaults(run=cmd_bank_disable)
    release = bank_commands.add_parser(
        "release", help="lift a flooding entry's quarantine; no new one for --exempt-hours"
    )
    release.add_argument("key", metavar="BANK/TYPE/ENTRY_ID")
    release.add_argument("--exempt-hours", type=float, default=24.0)
    release.set_defaults(run=cmd_bank_release)
    export = bank_commands.add_parser(
        "export", help="write a bank (labels, provenance, review outcomes) that import reads back"
    )
    export.add_argument("name")
    export.add_argument(
        "--format",
        choices=["csv", "jsonl", "threatexchange-csv", "local-file"],
        default="jsonl",
        help="threatexchange-csv and local-file: python-threatexchange's formats",
    )
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.set_defaults(run=cmd_bank_export)

    exchange = commands.add_parser(
        "exchange", help="banks synced from hash exchanges (python-threatexchange)"
    )
    exchange_commands = exchange.add_subparsers(required=True, metavar="ACTION")
    add = exchange_commands.add_parser("add", help="add (or replace) an exchange a bank syncs from")
    add.add_argument("name")
    add.add_argument(
        "--api",
        required=True,
        help="fb_threatexchange, tat, ncmec, stop_ncii, "
        "local_file or sample (python-threatexchange's names)",
    )
    add.add_argument("--bank", required=True, help="the bank its signals go to")
    add.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an API setting (local_file: path=FILE; fb_threatexchange: "
        "privacy_group=ID; tat: base_url=URL)",
    )
    secret = add.add_mutually_exclusive_group()
    secret.add_argument(
        "--credentials",
        metavar="FILE",
        help="file holding the API's credentials, on the sync service's machine",
    )
    secret.add_argument(
        "--credentials-env",
        metavar="VARIABLE",
        help="environment variable of the sync service holding them",
    )
    add.add_argument("--interval", type=float, default=3600.0, metavar="S")
    add.add_argument("--action-hint", choices=["takedown", "review"], default="takedown")
    add.add_argument("--disabled", action="store_true")
    add.set_defaults(run=cmd_exchange_add)
    for action, helptext in (
        ("list", "every exchange, its API and bank"),
        ("status", "each exchange's last sync, progress, counts and error"),
    ):
        listing = exchange_commands.add_parser(action, help=helptext)
        listing.set_defaults(run=cmd_exchange_list, detail=action == "status")
    for action, helptext in (
        ("show", "one exchange's config and state, as JSON"),
        ("enable", "sync it again"),
        ("disable", "stop syncing it (its entries stay)"),
    ):
        one = exchange_commands.add_parser(action, help=helptext)
        one.add_argument("name")
        one.set_defaults(run=cmd_exchange_one, action=action)
    remove = exchange_commands.add_parser("remove", help="remove an exchange and its state")
    remove.add_argument("name")
    remove.add_argument("--purge", action="store_true", help="also remove the entries it published")
    remove.set_defaults(run=cmd_exchange_remove)
    now = exchange_commands.add_parser("sync-now", help="sync an exchange now, out of turn")
    now.add_argument("name")
    now.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="follow the sync's progress for up to S seconds",
    )
    now.set_defaults(run=cmd_exchange_sync_now)
    sync_service = commands.add_parser(
        "exchange-sync", help="run the exchange sync service (one active, others stand by)"
    )
    sync_service.set_defaults(run=cmd_exchange_sync)

    serve = commands.add_parser(
        "serve", help="the HTTP API: HMA-compatible hashing, matching and bank curation"
    )
    serve.add_argument("--host", help="address to bind (default: MODSTREAM_WEB_HOST)")
    serve.add_argument("--port", type=int, default=5100, help="port (default 5100, HMA's)")
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve a non-loopback address without API keys (behind a trusted proxy only)",
    )
    serve.set_defaults(run=cmd_serve)
    api_key = commands.add_parser("api-key", help="API keys of the HTTP API")
    api_key_commands = api_key.add_subparsers(required=True, metavar="ACTION")
    create = api_key_commands.add_parser(
        "create", help="add a key to the keys file (hashed) and print it once"
    )
    create.add_argument("name")
    create.add_argument("--role", action="append", required=True,
                        choices=["submit", "lookup", "bank_admin", "shared_bank_admin",
                                 "review"])  # fmt: skip
    create.add_argument("--platform", action="append", default=[],
                        help="a platform the key acts for: submits, reviews, curates the "
                             "banks of (repeat)")  # fmt: skip
    create.add_argument("--file", type=Path, help="keys file (default: MODSTREAM_API_KEYS_FILE)")
    create.add_argument(
        "--rate",
        type=float,
        help="this key's requests per second (default: MODSTREAM_API_RATE_PER_S)",
    )
    create.add_argument("--burst", type=float,
                        help="this key's burst (default: MODSTREAM_API_BURST)")  # fmt: skip
    create.set_defaults(run=cmd_api_key_create)

    review = commands.add_parser("review", help="human review: outcomes in, platforms' policy")
    review_commands = review.add_subparsers(required=True, metavar="ACTION")
    submit = review_commands.add_parser(
        "submit", help="publish a reviewer's outcome on a decision to review.outcomes"
    )
    submit.add_argument("outcome", choices=["confirm", "overturn", "escalate"])
    submit.add_argument(
        "--decision",
        type=Path,
        help="a file holding the decision as JSON (a line of `modstream tail reviews`; '-' reads "
        "stdin): fills in the ids below",
    )
    for name in ("decision-id", "event-id", "platform", "content-id"):
        submit.add_argument(f"--{name}")
    submit.add_argument("--reviewer", required=True)
    submit.add_argument("--reason", default="")
    submit.add_argument("--label", action="append", default=[])
    submit.set_defaults(run=cmd_review_submit)
    policy = review_commands.add_parser(
        "policy", help="a platform's review policy: the bank its confirmed reviews feed"
    )
    policy.add_argument("platform")
    policy.add_argument("--auto-bank", metavar="BANK", help="omit to stop feeding any bank")
    policy.set_defaults(run=cmd_review_policy)

    produce = commands.add_parser("produce", help="publish upload events from a JSON-lines file")
    produce.add_argument("file", type=Path)
    produce.set_defaults(run=cmd_produce)

    tail = commands.add_parser("tail", help="print a topic's records as JSON lines")
    tail.add_argument("topic")
    tail.add_argument("--max", type=int, default=None)
    tail.add_argument("--timeout", type=float, default=None, help="stop after S idle seconds")
    tail.set_defaults(run=cmd_tail)

    hash_ = commands.add_parser("hash", help="print the signals of local files (no broker)")
    hash_.add_argument("files", nargs="+", type=Path, help="images and videos (by suffix)")
    hash_.add_argument(
        "--vpdq", type=Path, metavar="DIR", help="also write each video's hash as DIR/NAME.vpdq"
    )
    hash_.set_defaults(run=cmd_hash)

    scan = commands.add_parser("scan", help="decide local files and texts in-process (no broker)")
    scan.add_argument(
        "files", nargs="*", type=Path, help="images, videos; .txt files are scanned as text"
    )
    scan.add_argument("--bank", type=Path, required=True, help="bank file (CSV or JSON lines)")
    scan.add_argument("--bank-name", default="local")
    scan.add_argument("--text", action="append", default=[], help="a text post to scan")
    scan.set_defaults(run=cmd_scan)

    demo = commands.add_parser("demo", help="the end-to-end demo on the local broker")
    demo.add_argument(
        "--external",
        action="store_true",
        help="use the running broker and workers (docker compose) instead of starting them",
    )
    demo.set_defaults(run=cmd_demo)

    topics_ = commands.add_parser("topics", help="create the pipeline's topics if missing")
    topics_.set_defaults(run=cmd_topics)

    text = commands.add_parser("text", help="train and evaluate the text classifier")
    text_commands = text.add_subparsers(required=True, metavar="ACTION")
    train = text_commands.add_parser(
        "train", help="train on labelled JSON lines ({text, label: propaganda|other, ...})"
    )
    train.add_argument("data", type=Path)
    train.add_argument("--out", type=Path, required=True, help="model file (JSON) to write")
    train.add_argument("--holdout", type=float, default=0.25, help="share of families held out")
    train.add_argument("--splits", type=int, default=10, help="family splits to evaluate on")
    train.add_argument("--c", type=float, default=16.0, help="inverse regularization strength")
    train.add_argument(
        "--no-lexicon", action="store_true", help="train without the coded terms as a feature"
    )
    train.set_defaults(run=cmd_text_train)
    evaluate = text_commands.add_parser("eval", help="precision, recall, F1 on labelled data")
    evaluate.add_argument("data", type=Path)
    evaluate.add_argument("--model", type=Path, help="model file (default: the packaged one)")
    evaluate.add_argument("--threshold", type=float, help="default: MODSTREAM_TEXT_REVIEW_SCORE")
    evaluate.add_argument(
        "--no-lexicon", action="store_true", help="the model alone, without the coded terms"
    )
    evaluate.set_defaults(run=cmd_text_eval)
    return parser


def cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.localkafka import KafkaError, LocalKafka

    kafka = LocalKafka.from_env(settings.bootstrap)
    try:
        if args.action == "start":
            print(kafka.start())
        elif args.action == "stop":
            print(kafka.stop())
        else:
            answering, pid = kafka.status()
            state = "running" if answering else "not running"
            print(f"Kafka {state} on 127.0.0.1:{kafka.port}" + (f" (pid {pid})" if pid else ""))
            return 0 if answering else 3
    except KafkaError as exc:
        raise UserError(str(exc)) from None
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from faust import Worker

    from modstream.logs import logging_config
    from modstream.stream.app import build_app
    from modstream.stream.topics import ensure_topics

    if args.web_port:
        settings = Settings.from_env(web_port=args.web_port)
    config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(config)
    _run(ensure_topics(settings))
    app = build_app(settings)
    worker = Worker(app, loglevel=settings.log_level, logging_config=config, quiet=True)
    worker.execute_from_commandline()
    return 0


def cmd_bank_import(args: argparse.Namespace, settings: Settings) -> int:
    from collections import Counter

    from modstream.bank.files import read_bank_file

    skipped: Counter[str] = Counter()
    # Two passes, neither holding the entries: a bad line is an error before anything is
    # published, and the count gives the progress its ETA.
    total = sum(1 for _ in read_bank_file(args.file, args.bank, args.action_hint, skipped))
    progress = Progress("published", total)
    entries = read_bank_file(args.file, args.bank, args.action_hint)
    count = _publish(
        settings, "hashbank", ((e.key.encode(), dumps(e)) for e in entries), progress.update
    )
    progress.done(count)
    print(f"published {count} entries to bank {args.bank!r} in {progress.elapsed():.1f} s")
    if skipped:
        print("skipped: " + ", ".join(f"{n} ({why})" for why, n in skipped.most_common()))
    return 0


class Progress:
    """A count with its rate and, when the total is known, an ETA: one line redrawn on a
    terminal, a line every 10 s otherwise (a log)."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what, self.total = what, total
        self.started = self.shown = time.monotonic()
        self.tty = sys.stderr.isatty()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, count: int) -> None:
        now = time.monotonic()
        if now - self.shown < (0.5 if self.tty else 10.0):
            return
        self.shown = now
        rate = count / max(now - self.started, 1e-6)
        line = f"{self.what} {count:,} ({rate:,.0f}/s)"
        if self.total:
            eta = (self.total - count) / max(rate, 1e-6)
            line = f"{self.what} {count:,} of {self.total:,} ({rate:,.0f}/s, {eta:.0f} s left)"
        print(f"\r{line}" if self.tty else line, end="" if self.tty else "\n", file=sys.stderr)

    def done(self, count: int) -> None:
        if self.tty and self.shown > self.started:
            print(file=sys.stderr)


def cmd_bank_remove(args: argparse.Namespace, settings: Settings) -> int:
    keys = [bank_key(args.bank, args.signal_type, entry_id).encode() for entry_id in args.entry_ids]
    count = _publish(settings, "hashbank", [(key, None) for key in keys])
    print(f"removed {count} entries from bank {args.bank!r}")
    return 0


def cmd_bank_config(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.contracts import BANK_CONFIG_TOPIC, BankConfig

    table = _read_table(settings, BANK_CONFIG_TOPIC)
    key = f"bank/{args.name}".encode()
    current = orjson.loads(table.get(key) or BankConfig().to_json())
    thresholds = dict(current.get("thresholds") or {})
    for spec in args.threshold:
        signal_type, _, pairs = spec.partition(":")
        if pairs == "default":
            thresholds.pop(signal_type, None)
            continue
        try:
            thresholds[signal_type] = {
                name: int(value) for name, value in (p.split("=") for p in pairs.split(","))
            }
        except ValueError:
            raise UserError(f"--threshold {spec!r}: expected TYPE:takedown=N,review=M") from None
    changes = {
        "enabled": args.enabled,
        "enabled_ratio": args.ratio,
        "negative": args.negative,
        "platforms": args.platform,
        "suppresses": args.suppresses,
    }
    config = {**current, **{k: v for k, v in changes.items() if v is not None}}
    config["thresholds"] = thresholds
    if args.action is not None:
        config["action"] = None if args.action == "entries" else args.action
    record = dumps(config)
    BankConfig.parse(record)  # the checks a worker applies, before publishing
    _publish(settings, BANK_CONFIG_TOPIC, [(key, record)])
    print(f"bank {args.name!r}: {record.decode()}")
    return 0


def cmd_bank_show(args: argparse.Namespace, settings: Settings) -> int:
    from collections import Counter

    from modstream.contracts import BANK_CONFIG_TOPIC, HASHBANK_TOPIC, BankConfig

    config_table = _read_table(settings, BANK_CONFIG_TOPIC)
    config = config_table.get(f"bank/{args.name}".encode()) or BankConfig().to_json()
    sizes = Counter(
        key.decode().split("/")[1]
        for key in _read_table(settings, HASHBANK_TOPIC)
        if key.decode().startswith(f"{args.name}/")
    )
    prefix = f"entry/{args.name}/".encode()
    controls = {k.decode()[len("entry/") :]: orjson.loads(v) for k, v in config_table.items()
                if k.startswith(prefix)}  # fmt: skip
    print(orjson.dumps({
        "bank": args.name,
        "config": orjson.loads(config),
        "entries": dict(sorted(sizes.items())),
        "quarantined": {k: c for k, c in controls.items() if c.get("quarantined_at")},
        "disabled": {k: c for k, c in controls.items() if c.get("disabled_until")},
    }, option=orjson.OPT_INDENT_2).decode())  # fmt: skip
    return 0


def cmd_bank_disable(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.contracts import parse_time

    until = time.time() + args.for_s if args.for_s is not None else parse_time(args.until)
    _update_entry_control(settings, args.key, disabled_until=until)
    print(f"entry {args.key} disabled until {until:.0f} (epoch seconds)")
    return 0


def cmd_bank_release(args: argparse.Namespace, settings: Settings) -> int:
    exempt = time.time() + args.exempt_hours * 3600
    _update_entry_control(settings, args.key, quarantined_at=None, reason="", exempt_until=exempt)
    print(f"entry {args.key} released; no new quarantine for {args.exempt_hours:g} h")
    return 0


def _update_entry_control(settings: Settings, bank_key_: str, **changes: object) -> None:
    from modstream.contracts import BANK_CONFIG_TOPIC, EntryControl, parse_bank_key

    parse_bank_key(bank_key_)
    key = f"entry/{bank_key_}".encode()
    current = orjson.loads(_read_table(settings, BANK_CONFIG_TOPIC).get(key) or b"{}")
    record = dumps({**EntryControl().__dict__, **current, **changes})
    EntryControl.parse(record)
    _publish(settings, BANK_CONFIG_TOPIC, [(key, record)])


def cmd_bank_export(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.bank.files import write_bank_file
    from modstream.contracts import HASHBANK_TOPIC, REVIEW_CASES_TOPIC, BankEntry

    entries = [
        BankEntry.parse(value)
        for key, value in _read_table(settings, HASHBANK_TOPIC).items()
        if key.decode().startswith(f"{args.name}/")
    ]
    outcomes: dict[str, dict[str, int]] = {}
    for (_, key), value in _read_table(settings, REVIEW_CASES_TOPIC, by_partition=True).items():
        name = key.decode()
        if name.startswith(f"entry:{args.name}/"):  # one count per partition: add them up
            counts = outcomes.setdefault(name[len("entry:") :], {})
            for outcome, n in orjson.loads(value).items():
                counts[outcome] = counts.get(outcome, 0) + int(n)
    if args.out is None:
        count = write_bank_file(entries, outcomes, sys.stdout, args.format)
    else:
        with open(args.out, "w", encoding="utf-8", newline="") as out:
            count = write_bank_file(entries, outcomes, out, args.format)
    print(f"exported {count} entries of bank {args.name!r}", file=sys.stderr)
    return 0


def cmd_review_submit(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from modstream.contracts import REVIEW_OUTCOMES_TOPIC, ReviewOutcome
    from modstream.ingest.trust import OUTCOMES_TOPIC_PREFIX, topic_for

    ids = {}
    if args.decision is not None:
        raw = sys.stdin.buffer.read() if str(args.decision) == "-" else args.decision.read_bytes()
        decision = orjson.loads(raw)
        ids = {k: decision.get(k) for k in ("decision_id", "event_id", "platform", "content_id")}
    for name in ("decision_id", "event_id", "platform", "content_id"):
        given = getattr(args, name)
        if given is not None:
            ids[name] = given
        if not ids.get(name):
            raise UserError(f"--{name.replace('_', '-')} is required (or --decision FILE)")
    outcome = {
        "schema": 1,
        **ids,
        "outcome": args.outcome,
        "reviewer": args.reviewer,
        "reason": args.reason,
        "labels": args.label,
        "decided_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    record = dumps(outcome)
    ReviewOutcome.parse(record)  # a bad outcome is an error here, not a dead letter later
    topic = topic_for(
        ids["platform"], REVIEW_OUTCOMES_TOPIC, settings.platforms, OUTCOMES_TOPIC_PREFIX
    )
    _publish(settings, topic, [(ids["decision_id"].encode(), record)])
    print(f"{args.outcome} of decision {ids['decision_id']} submitted")
    return 0


def cmd_review_policy(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.contracts import BANK_CONFIG_TOPIC, PlatformPolicy

    policy = PlatformPolicy(auto_bank=args.auto_bank)
    PlatformPolicy.parse(policy.to_json())
    key = f"platform/{args.platform}".encode()
    _publish(settings, BANK_CONFIG_TOPIC, [(key, policy.to_json())])
    target = f"feed bank {args.auto_bank!r}" if args.auto_bank else "feed no bank"
    print(f"platform {args.platform!r}: confirmed reviews {target}")
    return 0


def cmd_exchange_add(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.contracts import EXCHANGE_CONFIG_TOPIC, ExchangeConfig
    from modstream.exchanges.catalog import collab_config, needs_credentials

    values = {}
    for pair in args.settings:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE")
        values[key] = value
    credentials = (
        {"file": str(Path(args.credentials).expanduser().resolve())}
        if args.credentials
        else {"env": args.credentials_env}
        if args.credentials_env
        else None
    )
    config = ExchangeConfig.parse(
        dumps(
            {
                "schema": 1,
                "name": args.name,
                "api": args.api,
                "bank": args.bank,
                "interval_s": args.interval,
                "enabled": not args.disabled,
                "settings": values,
                "credentials": credentials,
                "action_hint": args.action_hint,
            }
        )
    )
    collab_config(config)  # the settings are the API's: an error here, not in the service
    if needs_credentials(config.api) and credentials is None:
        raise UserError(f"{config.api} needs --credentials FILE or --credentials-env VARIABLE")
    _publish(settings, EXCHANGE_CONFIG_TOPIC, [(config.key.encode(), config.to_json())])
    print(
        f"exchange {config.name!r} ({config.api}) feeds bank {config.bank!r} every "
        f"{config.interval_s:g} s{'' if config.enabled else ' (disabled)'}"
    )
    return 0


def _exchanges(settings: Settings) -> tuple[dict, dict, dict[str, dict[str, int]]]:
    """Configs, states and report counts (``opinion status`` -> n) by exchange."""
    from modstream.contracts import EXCHANGE_CONFIG_TOPIC, EXCHANGE_STATE_TOPIC, ExchangeConfig
    from modstream.exchanges.reports import read_state_table

    configs = {
        key.decode()[len("exchange/") :]: ExchangeConfig.parse(value)
        for key, value in _read_table(settings, EXCHANGE_CONFIG_TOPIC).items()
        if key.startswith(b"exchange/")  # not the API-level credential references
    }
    read = read_state_table(_read_table(settings, EXCHANGE_STATE_TOPIC).items())
    reports: dict[str, dict[str, int]] = {}
    for report in read.reports.values():
        counts = reports.setdefault(report.exchange, {})
        label = f"{report.opinion} {report.status}"
        counts[label] = counts.get(label, 0) + 1
    return configs, read.states, reports


def _exchange(settings: Settings, name: str) -> tuple:
    configs, states, _ = _exchanges(settings)
    if name not in configs:
        raise UserError(f"no exchange {name!r} (see modstream exchange list)")
    return configs[name], states.get(name)


def _ago(moment: float | None) -> str:
    if not moment:
        return "never"
    seconds = max(0.0, time.time() - moment)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 3600:.1f} h ago"


def cmd_exchange_list(args: argparse.Namespace, settings: Settings) -> int:
    configs, states, reports = _exchanges(settings)
    if not configs:
        print("no exchanges (add one: modstream exchange add NAME --api API --bank BANK)")
    for name, config in sorted(configs.items()):
        flag = "" if config.enabled else "  [disabled]"
        print(f"{name}  api={config.api}  bank={config.bank}  every {config.interval_s:g} s{flag}")
        state, counts = states.get(name), reports.get(name, {})
        if args.detail and state is not None:
            doing = "syncing; " if state.syncing else ""
            print(
                f"    {doing}last success {_ago(state.last_success_at)}; data up to "
                f"{_ago(state.progress_at)}; fetched {state.fetched}, published "
                f"{state.published}, deleted {state.deleted}, unchanged {state.unchanged}"
            )
            if state.skipped:
                print("    skipped: " + ", ".join(f"{k} {v}" for k, v in state.skipped.items()))
            if counts:
                print("    reports: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
            if state.error:
                print(f"    ERROR ({state.failures} in a row): {state.error}")
        elif args.detail:
            print("    not synced yet (is `modstream exchange-sync` running?)")
    return 0


def cmd_exchange_one(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    from modstream.contracts import EXCHANGE_CONFIG_TOPIC

    config, state = _exchange(settings, args.name)
    if args.action == "show":
        print(dumps({"config": config, "state": state}).decode())
        return 0
    config = dataclasses.replace(config, enabled=args.action == "enable")
    _publish(settings, EXCHANGE_CONFIG_TOPIC, [(config.key.encode(), config.to_json())])
    print(f"exchange {args.name!r} {args.action}d")
    return 0


def cmd_exchange_remove(args: argparse.Namespace, settings: Settings) -> int:
    import re

    from modstream.contracts import EXCHANGE_CONFIG_TOPIC, EXCHANGE_STATE_TOPIC, HASHBANK_TOPIC

    config, _ = _exchange(settings, args.name)
    _publish(settings, EXCHANGE_CONFIG_TOPIC, [(config.key.encode(), None)])
    _publish(settings, EXCHANGE_STATE_TOPIC, [(config.key.encode(), None)])
    purged = 0
    if args.purge:
        mine = re.compile(rb"/" + re.escape(args.name.encode()) + rb"\.[0-9a-f]{16}\.[0-9a-f]{8}$")
        keys = [key for key in _read_table(settings, HASHBANK_TOPIC) if mine.search(key)]
        purged = _publish(settings, HASHBANK_TOPIC, [(key, None) for key in keys])
    print(f"exchange {args.name!r} removed" + (f", {purged} entries purged" if args.purge else ""))
    return 0


def cmd_exchange_sync_now(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    from modstream.contracts import EXCHANGE_CONFIG_TOPIC

    config, _ = _exchange(settings, args.name)
    asked = time.time()
    config = dataclasses.replace(config, sync_requested_at=asked)
    _publish(settings, EXCHANGE_CONFIG_TOPIC, [(config.key.encode(), config.to_json())])
    print(f"sync of {args.name!r} requested")
    deadline, last = asked + args.wait, None
    while time.time() < deadline:
        time.sleep(1.0)
        state = _exchange(settings, args.name)[1]
        if state is None or (state.last_attempt_at or 0) < asked:
            continue
        if (state.fetched, state.syncing) != last:
            last = (state.fetched, state.syncing)
            rate = state.fetched / max(time.time() - asked, 1e-3)
            print(
                f"  fetched {state.fetched} ({rate:,.0f}/s), published {state.published}, "
                f"deleted {state.deleted}, unchanged {state.unchanged}",
                file=sys.stderr,
            )
        if not state.syncing:
            if state.error:
                raise UserError(f"sync of {args.name!r} failed: {state.error}")
            print(f"synced {args.name!r}")
            return 0
    if args.wait:
        raise UserError(f"sync of {args.name!r} not finished within {args.wait:g} s")
    return 0


def cmd_exchange_sync(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from modstream.logs import logging_config
    from modstream.stream.exchange_service import run_exchange_sync

    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_exchange_sync(settings, stop)

    _run(run())
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.logs import logging_config
    from modstream.serve.server import run_server

    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    run_server(settings, args.host or settings.web_host, args.port, args.allow_anonymous)
    return 0


def cmd_api_key_create(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from modstream.serve.access import key_record, new_key

    path = args.file or settings.api_keys_file
    if path is None:
        raise UserError("--file FILE or MODSTREAM_API_KEYS_FILE names the keys file")
    key = new_key()
    try:
        record = key_record(args.name, key, args.role, args.platform, args.rate, args.burst)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "ab") as out:
        out.write(record + b"\n")
    print(key)  # shown once: only its hash is kept
    print(f"key {args.name!r} ({', '.join(sorted(set(args.role)))}) added to {path}",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    """Lines are sent as they are (invalid ones too: the pipeline dead-letters them); with
    bound platforms, each to its platform's topic."""
    from modstream.ingest.trust import platform_topic

    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    for line in args.file.read_bytes().splitlines():
        if not line.strip():
            continue
        topic, key = "uploads", None
        try:
            event = UploadEvent.parse(line)
        except ContractError:
            pass
        else:
            key = event.content_id.encode()
            if event.platform in settings.platforms:
                topic = platform_topic(event.platform)
        by_topic.setdefault(topic, []).append((key, line))
    published = sum(_publish(settings, topic, records) for topic, records in by_topic.items())
    print(f"published {published} events")
    return 0


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.stream.client import read_topic

    async def run() -> None:
        async for key, value in read_topic(
            settings.kafka,
            settings.topic(args.topic),
            max_records=args.max,
            timeout_s=args.timeout,
        ):
            out = {"key": key.decode(errors="replace") if key is not None else None}
            try:
                out["value"] = orjson.loads(value) if value is not None else None
            except orjson.JSONDecodeError:
                out["value_raw"] = (value or b"").decode(errors="replace")
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
            sys.stdout.flush()

    _run(run())
    return 0


def cmd_hash(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.scan import hash_file

    for path in args.files:
        result = hash_file(str(path), path, settings)
        sys.stdout.write(orjson.dumps({"file": str(path), **asdict(result)}).decode() + "\n")
        if args.vpdq and "vpdq" in result.signals:
            args.vpdq.mkdir(parents=True, exist_ok=True)
            (args.vpdq / f"{path.stem}.vpdq").write_text(result.signals["vpdq"]["value"])
    return 0


def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.bank.files import read_bank_file
    from modstream.scan import hash_file, local_engine, local_event

    engine = local_engine(settings, list(read_bank_file(args.bank, args.bank_name)))
    items: list[tuple[str, str | None, list]] = []
    for path in args.files:
        if path.suffix == ".txt":
            items.append((str(path), path.read_text(encoding="utf-8"), []))
        else:
            items.append((str(path), None, [hash_file("0", path, settings)]))
    items.extend((f"text:{i}", text, []) for i, text in enumerate(args.text))
    if not items:
        raise UserError("nothing to scan: give files or --text")
    for name, text, media in items:
        decision = engine.decide(local_event(name, text, len(media)), media, decided_at=time.time())
        sys.stdout.write(decision.to_json().decode() + "\n")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.demo import run_demo

    return run_demo(settings, external=args.external)


def cmd_text_train(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.text import classifier
    from modstream.text.lexicon import Lexicon

    rows = classifier.read_jsonl(args.data)
    threshold = settings.text_review_score
    report = None
    lexicon = None if args.no_lexicon else Lexicon.load(settings.text_lexicon)
    if args.holdout > 0 and args.splits > 0:
        report = classifier.evaluate_splits(
            rows, args.splits, args.holdout, args.c, threshold, lexicon
        )
        print(
            f"held out {args.holdout:.0%} of the families of {len(rows)} texts, "
            f"{args.splits} different ways; every held-out prediction pooled:"
        )
        print(classifier.format_report(report))
    model = classifier.train(*_texts_and_labels(rows), c=args.c, lexicon=lexicon)
    model.metrics = {"trained_on": len(rows), "c": args.c, "holdout": report}
    model.save(args.out)
    print(f"model trained on all {len(rows)} texts written to {args.out}")
    return 0


def cmd_text_eval(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.text import classifier
    from modstream.text.lexicon import Lexicon

    lexicon = None if args.no_lexicon else Lexicon.load(settings.text_lexicon)
    model = classifier.LinearTextClassifier.load(args.model, lexicon)
    threshold = settings.text_review_score if args.threshold is None else args.threshold
    report = classifier.evaluate(model, classifier.read_jsonl(args.data), threshold)
    print(classifier.format_report(report))
    return 0


def _texts_and_labels(rows: list[dict]) -> tuple[list[str], list[int]]:
    return [r["text"] for r in rows], [int(r["label"] == "propaganda") for r in rows]


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from modstream.stream.topics import ensure_topics, topic_specs

    _run(ensure_topics(settings))
    for spec in topic_specs(settings):
        print(f"{spec.name}: {spec.partitions} partitions {spec.config}")
    return 0


def _read_table(settings: Settings, topic: str, by_partition: bool = False) -> dict:
    """A compacted topic's latest values by key (by ``(partition, key)`` if asked)."""
    from modstream.stream.client import read_table
    from modstream.stream.topics import ensure_topics

    async def run() -> dict:
        await ensure_topics(settings)
        return await read_table(settings.kafka, settings.topic(topic))

    table = _run(run())
    return table if by_partition else {key: value for (_, key), value in table.items()}


def _publish(settings: Settings, topic: str, records: Iterable, progress=None) -> int:
    from modstream.stream.client import publish
    from modstream.stream.topics import ensure_topics

    async def run() -> int:
        await ensure_topics(settings)
        return await publish(settings.kafka, settings.topic(topic), records, progress)

    return _run(run())


class _LastKafkaError(logging.Handler):
    """Keeps the client library's last error line: it says why a connection failed (invalid
    credentials, a certificate refused) where its exception says only "unable to bootstrap"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def _run(coro):
    """Run a Kafka client coroutine; a connection failure says why (other Kafka errors are
    reported by ``main``)."""
    from aiokafka.errors import KafkaConnectionError

    last_error = _LastKafkaError()
    client_log = logging.getLogger("aiokafka")
    client_log.addHandler(last_error)
    propagates, client_log.propagate = client_log.propagate, False  # retry chatter: kept back
    try:
        return asyncio.run(coro)
    except KafkaConnectionError as exc:
        why = last_error.message or str(exc)
        raise UserError(f"cannot reach Kafka at {Settings.from_env().bootstrap}: {why}") from None
    finally:
        client_log.removeHandler(last_error)
        client_log.propagate = propagates


if __name__ == "__main__":
    sys.exit(main())
