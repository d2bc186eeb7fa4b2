"""MD5 and SHA-256 of the media bytes: exact copies, and the hashes most banks still share."""

from __future__ import annotations

import re

from modstream.contracts import ComputedSignal
from modstream.hashing.content import Content
from modstream.signals.base import ExactSignal


class _DigestSignal(ExactSignal):
    source = "bytes"
    hex_digits: int

    def compute(self, content: Content) -> ComputedSignal:
        return {"value": content.digest(self.name)}

    def normalize(self, signal: str) -> str:
        value = signal.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{self.hex_digits}}}", value):
            raise ValueError(f"{self.name}: expected {self.hex_digits} hex digits")
        return value


class MD5Signal(_DigestSignal):
    """Of any media (python-threatexchange has MD5 for videos only, ``video_md5``)."""

    name = "md5"
    exchange_names = ("video_md5",)
    hex_digits = 32


class SHA256Signal(_DigestSignal):
    name = "sha256"
    exchange_names = ("video_sha256",)
    hex_digits = 64
