"""The Grafana dashboards, as code: ``python grafana/dashboards.py`` rewrites ``dashboards/``.

Panels are declared once here, so every query uses the same variables, datasource and units;
a test checks the committed JSON is what this file produces and evaluates every query
against a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
HERE = Path(__file__).parent
W = 'instance=~"$worker"'  # every modstream query is filtered by the worker variable
P = 'platform=~"$platform"'


def rate(metric: str, labels: str = W) -> str:
    return f"rate({metric}{{{labels}}}[$__rate_interval])"


def quantiles(histogram: str, by: str = "", labels: str = W) -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) ({rate(histogram + '_bucket', labels)}))",
            f"p{round(q * 100)}{suffix}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def panel(
    title: str,
    targets: list[tuple[str, str]],
    unit: str,
    kind: str = "timeseries",
    description: str = "",
) -> dict:
    body = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "timeseries":
        body["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if kind == "table":
        for target in body["targets"]:
            target.update(instant=True, format="table")
    return body


def variable(name: str, query: str) -> dict:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": name},
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
    }


WORKER = variable("worker", 'label_values(up{job="modstream"}, instance)')
PLATFORM = variable("platform", "label_values(modstream_events_total, platform)")
SERVER = variable("server", 'label_values(up{job="modstream-serve"}, instance)')
S = 'job="modstream-serve", instance=~"$server"'  # the HTTP API's processes


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict]) -> dict:
    for i, body in enumerate(panels):
        body["id"] = i + 1
        body["gridPos"] = {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}
    return {
        "uid": uid,
        "title": title,
        "tags": ["modstream"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "links": [
            {"type": "dashboards", "tags": ["modstream"], "asDropdown": True, "title": "modstream"}
        ],
        "panels": panels,
    }


def overview() -> dict:
    decisions = f"modstream_decisions_total{{{W}, {P}}}"
    share = "sum(rate({m}[$__rate_interval])) / sum(rate({all}[$__rate_interval]))"
    return dashboard(
        "modstream-overview",
        "modstream / pipeline overview",
        [
            panel(
                "Events per stage and platform",
                [
                    (
                        f"sum by (stage, platform) ({rate('modstream_events_total', f'{W}, {P}')})",
                        "{{stage}} {{platform}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Decisions by verdict",
                [(f"sum by (verdict) (rate({decisions}[$__rate_interval]))", "{{verdict}}")],
                "ops",
            ),
            panel(
                "Takedown and review rate (share of decisions)",
                [
                    (
                        share.format(
                            m=f'modstream_decisions_total{{{W}, {P}, verdict="takedown"}}',
                            all=decisions,
                        ),
                        "takedown",
                    ),
                    (
                        share.format(
                            m=f'modstream_decisions_total{{{W}, {P}, verdict="review"}}',
                            all=decisions,
                        ),
                        "review",
                    ),
                ],
                "percentunit",
            ),
            panel(
                "Dead letters by stage and reason",
                [
                    (
                        f"sum by (stage, reason) ({rate('modstream_dead_letters_total')})",
                        "{{stage}}: {{reason}}",
                    )
                ],
                "ops",
                description="Records that could not be parsed or validated; see uploads.dlq.",
            ),
            panel(
                "Media fetch and decode failures",
                [
                    (
                        f"sum by (source, reason) ({rate('modstream_media_failures_total')})",
                        "{{source}}: {{reason}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Matches by bank and action",
                [
                    (
                        f"sum by (bank, action) ({rate('modstream_matches_total')})",
                        "{{bank}} {{action}}",
                    )
                ],
                "ops",
            ),
        ],
        [WORKER, PLATFORM],
    )


def latency() -> dict:
    return dashboard(
        "modstream-latency",
        "modstream / latency",
        [
            panel(
                "End to end (upload in Kafka to decision sent)",
                quantiles("modstream_end_to_end_seconds"),
                "s",
                description="Target: p99 under 250 ms.",
            ),
            panel("Per stage", quantiles("modstream_stage_seconds", by="stage"), "s"),
            panel(
                "Commit (a partition's outputs and offset, in the worker's transaction)",
                quantiles("modstream_commit_seconds"),
                "s",
            ),
        ],
        [WORKER],
    )


def kafka() -> dict:
    return dashboard(
        "modstream-kafka",
        "modstream / Kafka",
        [
            panel(
                "Consumer lag per topic and partition",
                [
                    (
                        f"sum by (topic, partition) (modstream_consumer_lag_records{{{W}}})",
                        "{{topic}}/{{partition}}",
                    )
                ],
                "short",
            ),
            panel(
                "Consumer lag per worker",
                [(f"sum by (instance) (modstream_consumer_lag_records{{{W}}})", "{{instance}}")],
                "short",
            ),
            panel(
                "Partitions assigned and given up",
                [
                    (
                        f"sum by (change) ({rate('modstream_partition_changes_total')})",
                        "{{change}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Failed commits (retried; nothing committed past them)",
                [
                    (
                        f"sum by (instance) ({rate('modstream_commit_failures_total')})",
                        "{{instance}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Records consumed per topic",
                [(f"sum by (topic) ({rate('modstream_records_consumed_total')})", "{{topic}}")],
                "ops",
            ),
            panel(
                "Records produced per topic",
                [(f"sum by (topic) ({rate('modstream_records_produced_total')})", "{{topic}}")],
                "ops",
            ),
        ],
        [WORKER],
    )


def bank() -> dict:
    outcomes = "increase(modstream_entry_outcomes_total{{outcome{match}, {W}}}[$__range])"
    confirms = outcomes.format(match='="confirm"', W=W)
    judged = outcomes.format(match='=~"confirm|overturn"', W=W)
    return dashboard(
        "modstream-bank",
        "modstream / bank",
        [
            panel(
                "Entries per bank and signal type",
                [
                    (
                        f"max by (bank, signal_type) (modstream_bank_entries{{{W}}})",
                        "{{bank}} {{signal_type}}",
                    )
                ],
                "short",
            ),
            panel(
                "Time since the last bank update",
                [(f"max by (instance) (modstream_bank_update_age_seconds{{{W}}})", "{{instance}}")],
                "s",
                description="Alert at 2 days: is the bank sync still running?",
            ),
            panel(
                "Bank loaded (ready)",
                [(f"min by (instance) (modstream_bank_ready{{{W}}})", "{{instance}}")],
                "bool_yes_no",
            ),
            panel(
                "Matches per bank and signal type",
                [
                    (
                        f"sum by (bank, signal_type) ({rate('modstream_matches_total')})",
                        "{{bank}} {{signal_type}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Top matching entries (time range)",
                [
                    (
                        "topk(10, sum by (bank, entry_id) "
                        f"(increase(modstream_entry_matches_total{{{W}}}[$__range])))",
                        "{{bank}} {{entry_id}}",
                    )
                ],
                "short",
                kind="table",
            ),
            panel(
                "Entry precision from reviews (time range): confirm / (confirm + overturn)",
                [
                    (
                        # "or 0 * ...": an entry only ever overturned has precision 0, not none
                        f"(sum by (bank, entry_id) ({confirms}) or 0 * sum by (bank, entry_id) "
                        f"({judged})) / sum by (bank, entry_id) ({judged})",
                        "{{bank}} {{entry_id}}",
                    )
                ],
                "percentunit",
                kind="table",
                description="Entries that reviewers overturn are false positives: "
                "each overturn also keeps that file from matching again (docs/review-loop.md).",
            ),
            panel(
                "Review outcomes per entry (time range)",
                [
                    (
                        "topk(20, sum by (bank, entry_id, outcome) "
                        f"(increase(modstream_entry_outcomes_total{{{W}}}[$__range])))",
                        "{{bank}} {{entry_id}} {{outcome}}",
                    )
                ],
                "short",
                kind="table",
            ),
            panel(
                "Entries in flood quarantine",
                [
                    (
                        f"max by (bank, entry_id) (modstream_bank_entry_quarantined{{{W}}})",
                        "{{bank}} {{entry_id}}",
                    )
                ],
                "short",
                kind="table",
                description="Their matches go to review until a person runs "
                "modstream bank release (alert ModstreamBankEntryFlooding).",
            ),
            # Exchanges: the sync service (job modstream-exchange-sync), not the workers.
            panel(
                "Exchanges: time since the last successful sync",
                [
                    (
                        "time() - max by (exchange) "
                        "(modstream_exchange_last_success_timestamp_seconds)",
                        "{{exchange}}",
                    )
                ],
                "s",
                description="Alert ModstreamExchangeNotSyncing at 3 intervals; "
                "modstream exchange status says why.",
            ),
            panel(
                "Exchanges: bank entries written (time range)",
                [
                    (
                        "sum by (exchange, change) "
                        "(increase(modstream_exchange_entries_total[$__range]))",
                        "{{exchange}} {{change}}",
                    )
                ],
                "short",
                kind="table",
            ),
            panel(
                "Exchanges: failed syncs and records fetched",
                [
                    (
                        "sum by (exchange) "
                        "(rate(modstream_exchange_errors_total[$__rate_interval]))",
                        "{{exchange}} errors",
                    ),
                    (
                        "sum by (exchange) "
                        "(rate(modstream_exchange_fetched_total[$__rate_interval]))",
                        "{{exchange}} fetched",
                    ),
                ],
                "ops",
            ),
            panel(
                "Exchanges: active sync instance",
                [("max by (instance) (modstream_exchange_sync_active)", "{{instance}}")],
                "bool_yes_no",
                description="One instance holds the lease; the others stand by "
                "(alert ModstreamExchangeSyncDown).",
            ),
        ],
        [WORKER],
    )


def workers() -> dict:
    job = f'job="modstream", {W}'
    return dashboard(
        "modstream-workers",
        "modstream / workers",
        [
            panel("Up", [(f"up{{{job}}}", "{{instance}}")], "bool_yes_no"),
            panel(
                "CPU (worker process; hashing pool processes not included)",
                [(f"rate(process_cpu_seconds_total{{{job}}}[$__rate_interval])", "{{instance}}")],
                "percentunit",
            ),
            panel(
                "Resident memory",
                [(f"process_resident_memory_bytes{{{job}}}", "{{instance}}")],
                "bytes",
            ),
            panel(
                "Event loop lag",
                [(f"max by (instance) (modstream_event_loop_lag_seconds{{{W}}})", "{{instance}}")],
                "s",
                description="A blocked loop stops heartbeats: rebalances follow.",
            ),
        ],
        [WORKER],
    )


def http_api() -> dict:
    not_2xx = S + ', status!~"2.."'
    return dashboard(
        "modstream-http-api",
        "modstream / HTTP API",
        [
            panel("Up", [(f"up{{{S}}}", "{{instance}}")], "bool_yes_no"),
            panel(
                "Requests by route",
                [(f"sum by (route) ({rate('modstream_http_requests_total', S)})", "{{route}}")],
                "reqps",
            ),
            panel(
                "Answers other than 2xx, by route and status",
                [
                    (
                        "sum by (route, status) "
                        f"({rate('modstream_http_requests_total', not_2xx)})",
                        "{{route}} {{status}}",
                    )
                ],
                "reqps",
                description="4xx: callers' mistakes, missing keys or roles (401/403) and rate "
                "limits (429); 5xx: the server's (alert ModstreamApiErrors).",
            ),
            panel(
                "Latency by route",
                quantiles("modstream_http_request_seconds", by="route", labels=S),
                "s",
                description="Hash+match includes fetching and hashing the media.",
            ),
        ],
        [SERVER],
    )


BUILDERS = {
    "overview": overview,
    "latency": latency,
    "kafka": kafka,
    "bank": bank,
    "workers": workers,
    "http-api": http_api,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n"
        for name, build in BUILDERS.items()
    }


if __name__ == "__main__":
    out = HERE / "dashboards"
    out.mkdir(exist_ok=True)
    for name, text in render().items():
        (out / name).write_text(text)
        print(out / name)
