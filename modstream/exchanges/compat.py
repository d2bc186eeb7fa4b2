"""Every touch of python-threatexchange beyond its public interface, in one place, checked
against the versions it was written for (``tests/test_exchanges.py`` runs each).

* Credentials: each API's ``CredentialHelper`` parses its credential string (``user:pass``,
  a token, ...) in the private ``_from_str``; the public ``get`` only searches fixed home
  paths and variables, and modstream reads the file or variable the exchange config names.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from packaging.version import Version

SUPPORTED = (Version("1.2.17"), Version("1.3"))
INSTALLED = Version(version("threatexchange"))


def check_version() -> None:
    """Refuse to run against a python-threatexchange these touches were not checked with."""
    low, high = SUPPORTED
    if not low <= INSTALLED < high:
        raise RuntimeError(
            f"threatexchange {INSTALLED} is installed; modstream.exchanges.compat was "
            f"written for >={low},<{high}"
        )


def parse_credentials(credential_cls: Any, text: str) -> Any:
    """The API's credentials from their string form, validated as the library would."""
    check_version()
    credentials = credential_cls._from_str(text.strip())  # noqa: SLF001
    if credentials is None or not credentials._are_valid():  # noqa: SLF001
        raise ValueError(f"not valid {credential_cls.__name__} (see docs/exchanges.md)")
    return credentials
