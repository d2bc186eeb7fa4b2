"""The worker's own machinery cannot take it down or drown its logs (issue 12, first part)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from modstream.logs import RepeatLimit
from modstream.stages.metrics import PipelineMetrics


def record(msg: str, at: float, name: str = "aiokafka") -> logging.LogRecord:
    made = logging.makeLogRecord({"name": name, "msg": msg, "levelno": logging.ERROR})
    made.created = at
    return made


def test_a_repeated_log_line_is_held_back_and_counted():
    limit = RepeatLimit(burst=5, window_s=10.0)
    passed = [limit.filter(record("Unable connect to %s", 100.0 + i / 100)) for i in range(100)]
    assert passed.count(True) == 5
    assert limit.filter(record("another message", 100.5))  # other kinds are not held
    later = record("Unable connect to %s", 111.0)
    assert limit.filter(later)
    assert later.suppressed == 95


def test_the_repeat_limit_keeps_a_bounded_memory():
    limit = RepeatLimit(max_kinds=10)
    for i in range(1000):
        limit.filter(record(f"message {i}", 1.0))
    assert len(limit._windows) <= 10  # noqa: SLF001 - the bound is the point


def test_a_failing_periodic_task_is_counted_not_raised():
    metrics = PipelineMetrics(CollectorRegistry())
    with metrics.periodic("measure_consumer_lag"):
        raise TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'")
    with metrics.periodic("measure_consumer_lag"):
        pass
    failures = metrics.registry.get_sample_value(
        "modstream_periodic_failures_total", {"task": "measure_consumer_lag"}
    )
    assert failures == 1.0
