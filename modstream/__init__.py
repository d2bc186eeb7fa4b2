"""modstream: streaming content moderation on Kafka.

Stages, one package each: ``ingest`` (validate events, fetch media) -> ``hashing`` (signals)
-> ``matching`` (banks and indexes) + ``text`` (scoring) -> ``decide`` (policy).
``stream`` is the thin Faust shell that wires the stages to Kafka topics.
"""

__version__ = "0.1.0"
