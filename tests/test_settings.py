"""Settings from ``MODSTREAM_*`` variables, typed as the README documents them."""

from __future__ import annotations

import pytest

from modstream.settings import Settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("false", False), ("0", False), ("off", False), ("true", True), ("1", True), ("YES", True)],
)
def test_a_boolean_setting_reads_false_as_false(raw: str, expected: bool) -> None:
    settings = Settings.from_env({"MODSTREAM_OCR": raw})
    assert settings.ocr is expected
    assert (settings.ocr_policy is not None) is expected


def test_a_boolean_setting_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="MODSTREAM_OCR='maybe'"):
        Settings.from_env({"MODSTREAM_OCR": "maybe"})
