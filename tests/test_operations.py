"""Operations: dashboards, alerts and the compose stack, proven against a real Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import add_local_exchange, free_port, start_server
from streaming import collect, send, upload

from modstream.contracts import dumps
from modstream.demo import bank_entries, demo_uploads

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
sys.path.insert(0, str(ROOT / "grafana"))
import dashboards as dashboards_code  # noqa: E402 - grafana/dashboards.py, not a package

# What Grafana puts in place of its variables when it sends a query.
GRAFANA_VARIABLES = {
    "$worker": ".*",
    "$platform": ".*",
    "$server": ".*",
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$__range": "5m",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install the Debian package prometheus (.ci/run does)")
    return found


def dashboard_files() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) of every panel target."""
    return [
        (name, panel["title"], target["expr"])
        for name, board in dashboard_files().items()
        for panel in board["panels"]
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


# -- static checks -------------------------------------------------------------------------------


def test_committed_dashboards_are_what_the_code_generates():
    assert {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")} == dashboards_code.render()


def test_dashboards_are_sound():
    boards = dashboard_files()
    assert set(boards) == {
        "overview.json",
        "latency.json",
        "kafka.json",
        "bank.json",
        "workers.json",
        "http-api.json",
    }
    uids = [board["uid"] for board in boards.values()]
    assert len(uids) == len(set(uids))
    for name, board in boards.items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        variables = {v["name"] for v in board["templating"]["list"]}
        assert variables & {"worker", "server"}, f"{name}: no instance variable"
        for panel in board["panels"]:
            where = f"{name} / {panel['title']}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
            assert panel["targets"], f"{where}: no query"
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "prometheus", where
                assert target["expr"].strip(), f"{where}: empty query"
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__range"}
                assert used <= variables, f"{where}: uses undefined variables {used - variables}"
    provisioned = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert provisioned["datasources"][0]["uid"] == "prometheus"


def test_alert_rules_check_and_unit_tests_pass():
    tool = promtool()
    for args in (
        ["check", "rules", str(ALERTS)],
        ["test", "rules", str(ALERTS.with_name("alerts.test.yml"))],
        ["check", "config", str(ALERTS.with_name("prometheus.yml"))],
    ):
        result = subprocess.run([tool, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS.with_name("alerts.test.yml").read_text()))
    for rule in alert_rules():
        assert rule["annotations"].get("runbook"), f"{rule['alert']}: no runbook line"
        assert rule["alert"] in tested, f"{rule['alert']}: no unit test"


def test_compose_stack_is_complete():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "topics",
        "worker",
        "exchange-sync",
        "api",
        "demo",
        "prometheus",
        "grafana",
        "kafka-secure",
        "worker-secure",
    }
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka-secure"]["image"] == services["kafka"]["image"]
    assert "KRaft" in (ROOT / "docker-compose.yml").read_text()
    assert services["demo"]["profiles"] == ["demo"]
    secure = services["worker-secure"]
    assert services["kafka-secure"]["profiles"] == secure["profiles"] == ["secure"]
    assert secure["environment"]["MODSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    listeners = services["kafka-secure"]["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert "PLAINTEXT" not in listeners.replace("CONTROLLER:PLAINTEXT", "")
    assert "ports" not in services["worker"], "fixed host ports would stop --scale worker=3"
    for name, service in services.items():
        assert service.get("restart"), f"{name}: no restart policy"
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert check.get("test") or check.get("disable"), f"{name}: empty healthcheck"
        if check.get("disable"):
            assert name in ("topics", "demo"), f"{name}: only one-shot jobs may skip health"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).exists()
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["modstream"]["dns_sd_configs"][0]["names"] == ["worker"]  # every replica
    assert jobs["modstream-exchange-sync"]["dns_sd_configs"][0]["names"] == ["exchange-sync"]
    assert jobs["modstream-serve"]["dns_sd_configs"][0]["names"] == ["api"]
    for rule_file in prometheus["rule_files"]:
        assert (ROOT / "deploy/prometheus" / rule_file).exists()
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        result = subprocess.run(
            [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr


# -- against a real Prometheus -------------------------------------------------------------------


class Prometheus:
    """A real Prometheus server scraping the test's worker, exchange sync and HTTP API
    every second."""

    def __init__(self, tmp: Path, target_port: int, sync_port: int, serve_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                }
                for job, port in (
                    ("modstream", target_port),
                    ("modstream-exchange-sync", sync_port),
                    ("modstream-serve", serve_port),
                )
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: install the Debian package prometheus")
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise AssertionError("prometheus did not become ready")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> dict:
        params = urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as r:
                return orjson.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400: the expression does not parse
            return orjson.loads(exc.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


@pytest.mark.kafka
async def test_every_dashboard_and_alert_query_has_data_in_a_real_prometheus(
    workers, sync_services, tmp_path
):
    entries = bank_entries()
    await send(workers, "hashbank", [(e.key.encode(), dumps(e)) for e in entries])
    # Any entry's first match floods (one match, no history): the quarantine panel and its
    # alert get data.
    _, port = workers.start(MODSTREAM_FLOOD_MIN_MATCHES="1", MODSTREAM_FLOOD_FACTOR="1")
    # An exchange synced by the sync service: the exchange panels and alerts get data.
    signals = tmp_path / "partner.txt"
    signals.write_text(f"pdq {entries[0].signal}\n")
    add_local_exchange(workers, signals, bank="partner")
    sync_port = sync_services.start()
    sync_services.wait_active()
    # The HTTP API, answering a lookup and refusing a missing bank: its panels get data.
    api_url, api = start_server(workers, tmp_path)
    for path in ("/m/lookup?signal_type=pdq&signal=" + entries[0].signal, "/c/bank/NONE"):
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(api_url + path, timeout=10).close()
    prometheus = Prometheus(tmp_path, port, sync_port, int(api_url.rsplit(":", 1)[1]))
    try:
        # Every kind of outcome, so every panel has something to show: takedowns, reviews and
        # allows (the demo's uploads), a dead letter and a media URL that cannot be fetched.
        uploads = demo_uploads("ops", workers.settings.media_root)
        records = [(body["content_id"].encode(), orjson.dumps(body)) for _, body in uploads]
        records.append((b"bad", b'{"schema": 1, "event_id": "bad", "media": "not a list"'))
        unreachable = [{"media_id": "m", "kind": "image", "url": "http://127.0.0.1:9/x.jpg"}]
        records.append(upload("ops-unreachable", media=unreachable))
        await send(workers, "uploads", records)
        want = {body["event_id"] for _, body in uploads} | {"ops-unreachable"}
        found = await collect(workers, "decisions", want)
        assert want <= set(found)
        # Reviewers judge two matched takedowns: the review panels get data.
        matched = [
            ds[0] for ds in found.values()
            if ds[0]["verdict"] == "takedown"
            and any(e["kind"] == "hash_match" for e in ds[0]["evidence"])
        ][:2]  # fmt: skip
        assert len(matched) == 2
        outcomes = [
            review_outcome(d, o) for d, o in zip(matched, ["confirm", "overturn"], strict=True)
        ]
        await send(workers, "review.outcomes", outcomes)
        # Polled until every query has data (several scrapes, rate windows filled, the lag
        # timer run), up to a deadline; the last round's failures are the test's verdict.
        deadline = time.monotonic() + 60
        while True:
            failures = missing_data(prometheus)
            if not failures or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        assert not failures, "\n".join(failures)
        rules = orjson.loads(urllib.request.urlopen(f"{prometheus.url}/api/v1/rules").read())
        loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert loaded == {rule["alert"] for rule in alert_rules()}
    finally:
        prometheus.stop()
        api.terminate()
        api.wait(timeout=20)


def review_outcome(decision: dict, outcome: str) -> tuple[bytes, bytes]:
    ids = {k: decision[k] for k in ("decision_id", "event_id", "platform", "content_id")}
    body = {"schema": 1, **ids, "outcome": outcome, "reviewer": "ops",
            "decided_at": "2026-11-30T09:00:00Z"}  # fmt: skip
    return decision["decision_id"].encode(), orjson.dumps(body)


def missing_data(prometheus: Prometheus) -> list[str]:
    """Every dashboard panel, template variable and alert query that has no data yet."""
    failures = []
    for board, title, expr in panel_queries():
        answer = prometheus.query(grafana_to_promql(expr))
        if answer.get("status") != "success":
            failures.append(f"{board} / {title}: invalid: {answer.get('error')}\n  {expr}")
        elif not answer["data"]["result"]:
            failures.append(f"{board} / {title}: no series\n  {expr}")
    sources = ('up{job="modstream"}', "modstream_events_total", 'up{job="modstream-serve"}')
    for variable in sources:  # label_values()
        if not prometheus.query(variable)["data"]["result"]:
            failures.append(f"template variable source {variable}: no series")
    for rule in alert_rules():
        answer = prometheus.query(rule["expr"])
        if answer.get("status") != "success":
            failures.append(f"alert {rule['alert']}: invalid: {answer.get('error')}")
            continue
        # A quiet alert returns nothing by design; every series it reads must exist.
        for metric in set(re.findall(r"\b((?:modstream|faust|process)_\w+|up)\b", rule["expr"])):
            if not prometheus.query(f"count({metric})")["data"]["result"]:
                failures.append(f"alert {rule['alert']}: reads {metric}, which has no series")
    return failures
