"""``modstream serve``: the HTTP API, HMA-compatible, for platforms that do not run Kafka."""
