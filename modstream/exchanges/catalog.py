"""The exchange APIs by the names python-threatexchange gives them, and how an exchange
config becomes an authenticated ``SignalExchangeAPI`` instance."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import logging
import os
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from threatexchange.exchanges.collab_config import CollaborationConfigBase
from threatexchange.exchanges.fetch_state import SignalOpinion, SignalOpinionCategory
from threatexchange.exchanges.impl.fb_threatexchange_api import FBThreatExchangeSignalExchangeAPI
from threatexchange.exchanges.impl.file_api import LocalFileSignalExchangeAPI
from threatexchange.exchanges.impl.ncmec_api import NCMECSignalExchangeAPI
from threatexchange.exchanges.impl.static_sample import StaticSampleSignalExchangeAPI
from threatexchange.exchanges.impl.stop_ncii_api import StopNCIISignalExchangeAPI
from threatexchange.exchanges.signal_exchange_api import AnySignalExchangeAPI
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal
from threatexchange.signal_type.raw_text import RawTextSignal
from threatexchange.signal_type.sha256 import VideoSHA256Signal
from threatexchange.signal_type.signal_base import SignalType as TXSignalType
from threatexchange.signal_type.signal_base import SimpleSignalType

from modstream.contracts import EXCHANGE_APIS, ExchangeConfig
from modstream.exchanges.compat import check_version, parse_credentials
from modstream.exchanges.tat import TCAPExchange
from modstream.formats.vpdq import parse_vpdq

#: Credential files are a line or two; anything larger is not one.
MAX_CREDENTIALS_BYTES = 64 * 1024
log = logging.getLogger("modstream.exchanges")


class VPDQSignalName(SimpleSignalType):
    """python-threatexchange's vPDQ type needs the ``vpdq`` C++ extension to import; the
    exchanges use only a type's name and validation, which this gives without it."""

    @classmethod
    def get_name(cls) -> str:
        return "vpdq"

    @classmethod
    def validate_signal_str(cls, signal_str: str) -> str:
        parse_vpdq(signal_str)
        return signal_str


#: The python-threatexchange signal types modstream asks the exchanges for.
TX_SIGNAL_TYPES: tuple[type[TXSignalType], ...] = (
    PdqSignal,
    VideoMD5Signal,
    VideoSHA256Signal,
    RawTextSignal,
    VPDQSignalName,
)


class LocalFileExchange(LocalFileSignalExchangeAPI):
    """python-threatexchange's ``local_file``, with its ``report_opinion`` working: 1.2.17
    opens the file in mode ``"wta"``, which Python refuses ("must have exactly one of
    create/read/write/append mode"), so no true positive could ever be appended."""

    def report_opinion(
        self, s_type: type[TXSignalType], signal: str, opinion: SignalOpinion
    ) -> None:
        if opinion.category != SignalOpinionCategory.POSITIVE_CLASS or opinion.tags:
            raise NotImplementedError
        path = Path(self.collab.filename)
        newline = ""
        if path.exists() and path.stat().st_size:
            with path.open("rb") as tail:
                tail.seek(-1, os.SEEK_END)
                newline = "" if tail.read(1) == b"\n" else "\n"
        with path.open("a", encoding="utf-8") as file:
            file.write(f"{newline}{s_type.get_name()} {signal}\n")


APIS: dict[str, type[AnySignalExchangeAPI]] = {
    "fb_threatexchange": FBThreatExchangeSignalExchangeAPI,
    "tat": TCAPExchange,
    "ncmec": NCMECSignalExchangeAPI,
    "stop_ncii": StopNCIISignalExchangeAPI,
    "local_file": LocalFileExchange,
    "sample": StaticSampleSignalExchangeAPI,
}
assert set(APIS) == set(EXCHANGE_APIS)
assert all(cls.get_name() == name for name, cls in APIS.items())

#: modstream's names for settings python-threatexchange (and so HMA) spells otherwise, and
#: settings of modstream's own (not passed to the library).
RENAMED_SETTINGS = {"local_file": {"path": "filename"}}
_OWN = {"tat": {"base_url"}}


class ExchangeSetupError(ValueError):
    """The exchange cannot be set up as configured (a setting, its credentials)."""


def needs_credentials(api: str) -> bool:
    return hasattr(APIS[api], "get_credential_cls")


def collab_config(config: ExchangeConfig) -> CollaborationConfigBase:
    """python-threatexchange's collaboration config for the exchange, from its settings
    (strings, converted to the field types the API's config class declares)."""
    cls = APIS[config.api].get_config_cls()
    renamed = RENAMED_SETTINGS.get(config.api, {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {"name": config.name, "enabled": config.enabled}
    if "api" in fields:
        values["api"] = config.api
    for key, text in config.settings.items():
        if key in _OWN.get(config.api, ()):
            continue
        name = renamed.get(key, key)
        if name not in fields or name in ("name", "api", "enabled"):
            known = sorted(
                {k for k in fields if k not in ("name", "api", "enabled")} - set(renamed.values())
                | set(renamed)
                | _OWN.get(config.api, set())
            )
            raise ExchangeSetupError(
                f"{config.api} has no setting {key!r} (settings: {', '.join(known) or 'none'})"
            )
        values[name] = _convert(hints[name], text, key)
    missing = [
        next((k for k, v in renamed.items() if v == name), name)
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ExchangeSetupError(f"{config.api} needs the setting(s) {', '.join(missing)}")
    return cls(**values)


def _convert(kind: Any, text: str, key: str) -> Any:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    try:
        if origin is typing.Union:  # Optional[X]
            return (
                None
                if not text
                else _convert(next(a for a in args if a is not type(None)), text, key)
            )
        if origin in (set, frozenset) or kind in (set, frozenset):
            inner = args[0] if args else str
            return {_convert(inner, part.strip(), key) for part in text.split(",") if part.strip()}
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return kind(text)
        if kind is bool:
            return text.lower() in ("1", "true", "yes", "on")
        if kind is int:
            return int(text)
        return text
    except ValueError as exc:
        raise ExchangeSetupError(f"setting {key}: {exc}") from None


def open_exchange(config: ExchangeConfig) -> AnySignalExchangeAPI:
    """An authenticated instance of the exchange's API (blocking: some APIs log in here)."""
    check_version()
    cls = APIS[config.api]
    collab = collab_config(config)
    if config.api == "tat":
        credentials = _credentials(config, cls)
        return TCAPExchange(
            credentials.username, credentials.password, _base_url(config.settings.get("base_url"))
        )
    if needs_credentials(config.api):
        return cls.for_collab(collab, _credentials(config, cls))  # type: ignore[call-arg]
    return cls.for_collab(collab)


def _credentials(config: ExchangeConfig, cls: Any) -> Any:
    """Read from the file or variable the config names, never from Kafka. The error says
    only that they could not be used: it reaches ``/c/exchange/<name>/status``, where
    "no such file" against "not valid" would tell an API caller which files and variables
    exist on this machine. Why, without the value, goes to this service's own log."""
    source = config.credentials or {}
    if "file" not in source and "env" not in source:
        raise ExchangeSetupError(
            f"{config.api} needs credentials: --credentials FILE or --credentials-env NAME"
        )
    try:
        text = _credential_text(source)
        return parse_credentials(cls.get_credential_cls(), text)
    except Exception as exc:  # the library's parse errors may quote the secret: not kept
        why = str(exc) if isinstance(exc, ExchangeSetupError) else "not valid for the API"
        log.warning(
            "exchange credentials unusable",
            extra={"exchange": config.name, "api": config.api, "reason": why},
        )
        raise ExchangeSetupError(
            f"the credentials referenced for {config.api} are missing or not valid "
            "(the sync service's log says which)"
        ) from None


def _credential_text(source: dict[str, str]) -> str:
    if "file" in source:
        path = Path(source["file"]).expanduser()
        try:
            stat = path.stat()
            if not path.is_file():  # a FIFO or a device would block or never end
                raise ExchangeSetupError(f"credentials file {path} is not a regular file")
            if stat.st_size > MAX_CREDENTIALS_BYTES:
                raise ExchangeSetupError(f"credentials file {path} is too large to be one")
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc.__class__.__name__
            raise ExchangeSetupError(f"credentials file {path}: {reason}") from None
    text = os.environ.get(source["env"], "")
    if not text:
        raise ExchangeSetupError(f"credentials variable {source['env']} is not set")
    return text


def _base_url(url: str | None) -> str | None:
    """An exchange host other than the API's own: https, or http on loopback only (a test
    server), so a config cannot send credentials in clear across a network."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ExchangeSetupError("base_url: https, or http on a loopback address")
    return url
