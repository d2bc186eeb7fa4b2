"""HMA's ``/c/exchanges*`` endpoints over modstream's exchanges (docs/exchanges.md): an
exchange created here is an ``exchange.config`` record the sync service (``modstream
exchange-sync``) acts on, and its status is what that service writes to ``exchange.state``.

Two things HMA does are refused on purpose, because the API is reachable by every
``bank_admin`` key while the sync service holds the exchanges' credentials:

- **Credentials are never taken over HTTP** (nor kept in Kafka). ``POST
  /c/exchanges/api/<api>`` takes a *reference* to where they are on the sync service's
  machine, ``{"file": PATH}`` or ``{"env": VARIABLE}``; a secret is a 400. A reference
  reaches only what is meant for it (``confined_reference``): a file inside
  ``MODSTREAM_API_CREDENTIALS_DIR``, a variable named ``EXCHANGE_CREDENTIALS_*``; and the
  sync error shown by the status says no more than "missing or not valid", so neither is a
  probe of the sync service's files and environment.
- **Settings that choose where credentials are sent or which local file is read and
  written** are an operator's (``modstream exchange add``): ``base_url`` of TCAP is refused,
  and a ``local_file`` path must lie inside ``MODSTREAM_API_EXCHANGE_FILES_DIR``.
"""

from __future__ import annotations

import dataclasses
import enum
import posixpath
import re
import time
import typing
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Body, FastAPI, Request
from threatexchange.utils.dataclass_json import dataclass_dump_dict

from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    EXCHANGE_API_ALIASES,
    EXCHANGE_CONFIG_TOPIC,
    EXCHANGE_STATE_TOPIC,
    BankConfig,
    ContractError,
    ExchangeConfig,
    ExchangeState,
    credential_reference,
)
from modstream.exchanges.catalog import (
    APIS,
    RENAMED_SETTINGS,
    ExchangeSetupError,
    collab_config,
    needs_credentials,
)
from modstream.serve.access import require_bank_access, require_shared_admin
from modstream.serve.backend import BANK_NAME, ApiError, Backend

#: Collaboration fields HMA fills itself (``api_json`` need not carry them).
_IMPLIED = ("name", "api", "enabled")
#: The variables a credential reference made over HTTP may name: none of modstream's own
#: (``MODSTREAM_KAFKA_PASSWORD``) nor any other secret of the sync service's environment.
CREDENTIALS_ENV_PREFIX = "EXCHANGE_CREDENTIALS_"
_CREDENTIALS_ENV = re.compile(rf"^{CREDENTIALS_ENV_PREFIX}[A-Z0-9_]{{1,100}}$")
#: Settings only an operator sets (they choose where credentials go).
_OPERATOR_ONLY = {"tat": {"base_url"}}
#: HMA's field names (python-threatexchange's) for modstream's settings where they differ.
_HMA_SETTING_NAMES = {
    api: {library: own for own, library in names.items()} for api, names in RENAMED_SETTINGS.items()
}


class ExchangeBook:
    """The replicated exchange configs, API-level credential references and sync states.
    ``configs`` and ``states`` are fed by two replicas (``config_table``, ``state_table``)."""

    def __init__(self) -> None:
        self.configs: dict[str, ExchangeConfig] = {}
        self.api_credentials: dict[str, dict[str, str]] = {}
        self.states: dict[str, ExchangeState] = {}
        self.config_table = _Table(self._apply_config)
        self.state_table = _Table(self._apply_state)

    def _apply_config(self, key: str, value: bytes | None) -> None:
        kind, _, name = key.partition("/")
        if kind == "exchange":
            if value is None:
                self.configs.pop(name, None)
            else:
                self.configs[name] = ExchangeConfig.parse(value)
        elif kind == "api":
            if value is None:
                self.api_credentials.pop(name, None)
                return
            data = orjson.loads(value)
            found = data.get("credentials") if isinstance(data, dict) else None
            reference = credential_reference(found)
            if reference is None:
                raise ContractError(f"{key}: credentials must be a file or variable reference")
            self.api_credentials[name] = reference

    def _apply_state(self, key: str, value: bytes | None) -> None:
        if not key.startswith("exchange/"):
            return  # reports and the reporter's offsets
        name = key[len("exchange/") :]
        if value is None:
            self.states.pop(name, None)
        else:
            self.states[name] = ExchangeState.parse(value)


class _Table:
    """A ``KeyedState`` for ``StateReplica``."""

    def __init__(self, apply: typing.Callable[[str, bytes | None], None]) -> None:
        self.apply = apply


class ExchangeAdmin:
    def __init__(
        self,
        backend: Backend,
        book: ExchangeBook,
        files_dir: Path | None,
        credentials_dir: Path | None = None,
    ) -> None:
        self.backend = backend
        self.book = book
        self.files_dir = files_dir
        self.credentials_dir = credentials_dir

    def api_name(self, api: str, unknown: str = "no such Exchange API '{}'") -> str:
        """python-threatexchange's name of ``api`` (aliases accepted); a 400 with HMA's
        message for the endpoint (``unknown``) if there is none."""
        name = EXCHANGE_API_ALIASES.get(api, api)
        if name not in APIS:
            raise ApiError(400, unknown.format(api))
        return name

    def exchange(self, name: str) -> ExchangeConfig:
        config = self.book.configs.get(name)
        if config is None:
            raise ApiError(404, f"Exchange '{name}' not found")
        return config

    def api_info(self, api: str) -> dict[str, bool]:
        name = self.api_name(api)
        return {
            "supports_authentification": needs_credentials(name),
            "has_set_authentification": name in self.book.api_credentials,
        }

    async def set_api_credentials(self, api: str, credential_json: Any) -> dict[str, bool]:
        """Record where an API's credentials are, and give it to the API's exchanges that
        had none of their own (or had the previous reference)."""
        name = self.api_name(api)
        if not needs_credentials(name):
            raise ApiError(400, f"{name} takes no credentials")
        previous = self.book.api_credentials.get(name)
        reference = None
        if credential_json:
            reference = credential_reference(credential_json)
            if reference is None:
                raise ApiError(400, NO_SECRETS)
            reference = confined_reference(reference, self.credentials_dir)
            if reference is None:
                raise ApiError(403, CONFINED)
        value = orjson.dumps({"api": name, "credentials": reference}) if reference else None
        records: list[tuple[bytes, bytes | None]] = [(f"api/{name}".encode(), value)]
        for config in self.book.configs.values():
            if config.api == name and config.credentials in (None, previous):
                changed = dataclasses.replace(config, credentials=reference)
                records.append((changed.key.encode(), changed.to_json()))
        await self.backend.publisher.publish(EXCHANGE_CONFIG_TOPIC, records)
        return self.api_info(name)

    def api_schema(self, api: str) -> dict[str, Any]:
        """The fields ``api_json`` takes, in the shape ROOST's Coop renders as a form, and
        the credential reference's."""
        name = self.api_name(api)
        cls = APIS[name].get_config_cls()
        hints = typing.get_type_hints(cls)
        fields = [
            _field_schema(f, hints[f.name])
            for f in dataclasses.fields(cls)
            if f.init and f.name not in _IMPLIED
        ]
        credentials = None
        if needs_credentials(name):
            where = "on the machine of modstream exchange-sync"
            credentials = {
                "fields": [
                    _schema_entry("file", "string", False, f"path of the credentials file {where}"),
                    _schema_entry(
                        "env", "string", False, f"environment variable holding them {where}"
                    ),
                ]
            }
        return {"config_schema": {"fields": fields}, "credentials_schema": credentials}

    async def create(
        self,
        bank: str,
        api: str | None,
        api_json: dict[str, Any],
        interval_s: float | None = None,
        action_hint: str | None = None,
    ) -> None:
        """An exchange named as its bank, and the bank (HMA creates both)."""
        if not BANK_NAME.match(bank):
            raise ApiError(400, "Field `bank` must match /^[A-Z0-9_]+$/")
        if api is None:
            raise ApiError(400, "Field `api` is required")
        name = self.api_name(api, "No such exchange type '{}'")
        if bank in self.book.configs:
            raise ApiError(403, "Exchange already exists")
        if bank in self.backend.banks():
            raise ApiError(403, "Bank already exists")
        settings = self._settings(name, api_json)
        raw: dict[str, Any] = {
            "schema": 1,
            "name": bank,
            "api": name,
            "bank": bank,
            "enabled": api_json.get("enabled", True) is not False,
            "settings": settings,
            "credentials": self.book.api_credentials.get(name),
        }
        if interval_s is not None:
            raw["interval_s"] = interval_s
        if action_hint is not None:
            raw["action_hint"] = action_hint
        try:
            config = ExchangeConfig.parse(orjson.dumps(raw))
            collab_config(config)
        except (ContractError, ExchangeSetupError) as exc:
            raise ApiError(400, f"Failed to parse `api_json`: {exc}") from None
        await self.backend.publisher.publish(
            BANK_CONFIG_TOPIC, [(f"bank/{bank}".encode(), BankConfig().to_json())]
        )
        await self.backend.publisher.publish(
            EXCHANGE_CONFIG_TOPIC, [(config.key.encode(), config.to_json())]
        )

    def _settings(self, api: str, api_json: dict[str, Any]) -> dict[str, str]:
        """``api_json`` (python-threatexchange's field names and JSON values) as the
        config's settings (strings, modstream's names)."""
        if not isinstance(api_json, dict):
            raise ApiError(400, "Field `api_json` must be object")
        renamed = _HMA_SETTING_NAMES.get(api, {})
        settings = {}
        for key, value in api_json.items():
            if key in _IMPLIED or value is None:
                continue
            if key in _OPERATOR_ONLY.get(api, ()):
                raise ApiError(
                    403, f"{key} is set by an operator (modstream exchange add), not over HTTP"
                )
            settings[renamed.get(key, key)] = _setting_text(value)
        if api == "local_file" and "path" in settings:
            settings["path"] = self._local_file(settings["path"])
        return settings

    def _local_file(self, path: str) -> str:
        if self.files_dir is None:
            raise ApiError(
                403, "local_file exchanges over HTTP need MODSTREAM_API_EXCHANGE_FILES_DIR"
            )
        root = posixpath.normpath(str(self.files_dir))
        full = posixpath.normpath(posixpath.join(root, path))
        if not full.startswith(root.rstrip("/") + "/"):
            raise ApiError(403, f"local_file: the file must be inside {root}")
        return full

    def show(self, config: ExchangeConfig) -> dict[str, Any]:
        """HMA's serialisation of the collaboration config, with modstream's bank,
        interval and action hint."""
        try:
            shown = dataclass_dump_dict(collab_config(config))
        except ExchangeSetupError:
            shown = {"name": config.name, "api": config.api, "enabled": config.enabled}
        for hma, own in _HMA_SETTING_NAMES.get(config.api, {}).items():
            if own in shown:
                shown[hma] = shown.pop(own)
        shown.update(api=config.api, bank=config.bank, interval_s=config.interval_s,
                     action_hint=config.action_hint)  # fmt: skip
        return shown

    async def update(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        config = self.exchange(name)
        if "enabled" in changes:
            config = dataclasses.replace(config, enabled=bool(changes["enabled"]))
        if changes.get("sync_now"):
            config = dataclasses.replace(config, sync_requested_at=time.time())
        await self.backend.publisher.publish(
            EXCHANGE_CONFIG_TOPIC, [(config.key.encode(), config.to_json())]
        )
        return self.show(config)

    async def delete(self, name: str) -> None:
        """The exchange and its state; the bank and its entries stay (``DELETE
        /c/bank/<name>`` removes them)."""
        if name not in self.book.configs:
            return
        key = f"exchange/{name}".encode()
        await self.backend.publisher.publish(EXCHANGE_CONFIG_TOPIC, [(key, None)])
        await self.backend.publisher.publish(EXCHANGE_STATE_TOPIC, [(key, None)])

    def status(self, name: str) -> dict[str, Any]:
        """HMA's fetch status (both its older and newer keys), and modstream's counts."""
        self.exchange(name)
        state = self.book.states.get(name)
        if state is None:
            return {"checkpoint_ts": None, "running_fetch_start_ts": None,
                    "last_fetch_complete_ts": None, "last_fetch_succeeded": None,
                    "up_to_date": False, "fetched_items": 0,
                    "last_fetch_time": 0, "checkpoint_time": 0, "success": False}  # fmt: skip
        attempted = state.last_attempt_at is not None
        succeeded = attempted and not state.error
        # When the last fetch ended: a success's end, or a failure's (the sync service
        # stamps ``last_attempt_at`` when an attempt fails). Once a fetch after a failure
        # starts, that stamp is its start: then no end is known.
        if succeeded:
            complete = state.last_success_at
        else:
            complete = None if state.syncing else state.last_attempt_at
        return {
            "checkpoint_ts": _seconds(state.progress_at),
            "running_fetch_start_ts": _seconds(state.last_attempt_at) if state.syncing else None,
            "last_fetch_complete_ts": _seconds(complete),
            "last_fetch_succeeded": succeeded if attempted else None,
            "up_to_date": bool(succeeded and not state.syncing),
            "fetched_items": state.fetched,
            "last_fetch_time": _seconds(state.last_attempt_at) or 0,
            "checkpoint_time": _seconds(state.progress_at) or 0,
            "success": succeeded,
            "published": state.published,
            "deleted": state.deleted,
            "unchanged": state.unchanged,
            "skipped": state.skipped,
            "error": state.error,
            "failures": state.failures,
        }


def add_exchange_routes(api: FastAPI, admin: ExchangeAdmin) -> None:
    @api.get("/c/exchanges/apis", tags=["hma"])
    async def exchange_apis() -> list[str]:
        return list(APIS)

    @api.get("/c/exchanges/api/{api_name}", tags=["hma"])
    async def exchange_api(api_name: str) -> dict[str, bool]:
        return admin.api_info(api_name)

    @api.post("/c/exchanges/api/{api_name}", tags=["hma"])
    async def exchange_api_credentials(
        request: Request, api_name: str, payload: Annotated[dict[str, Any], Body()]
    ) -> dict[str, bool]:
        """``{"credential_json": {"file": PATH} | {"env": VARIABLE}}``: where the sync
        service finds the API's credentials (``{}`` forgets it). Never the secret itself."""
        if "credential_json" not in payload:
            return admin.api_info(api_name)
        require_shared_admin(request)
        return await admin.set_api_credentials(api_name, payload["credential_json"])

    @api.get("/c/exchanges/api/{api_name}/schema", tags=["hma"])
    async def exchange_api_schema(api_name: str) -> dict[str, Any]:
        return admin.api_schema(api_name)

    @api.get("/c/exchanges", tags=["hma"])
    async def exchanges() -> list[str]:
        return sorted(admin.book.configs)

    @api.post("/c/exchanges", status_code=201, tags=["hma"])
    async def create_exchange(
        request: Request,
        bank: Annotated[str, Body()],
        api_type: Annotated[str | None, Body(alias="api")] = None,
        api_json: Annotated[dict[str, Any] | None, Body()] = None,
        interval_s: Annotated[float | None, Body()] = None,
        action_hint: Annotated[str | None, Body()] = None,
    ) -> dict[str, str]:
        """An exchange and its bank, both named ``bank``; ``interval_s`` and
        ``action_hint`` are modstream's (docs/exchanges.md)."""
        require_bank_access(request, admin.backend.controls, bank)
        await admin.create(bank, api_type, api_json or {}, interval_s, action_hint)
        return {"message": "Created successfully"}

    @api.get("/c/exchange/{exchange_name}", tags=["hma"])
    async def exchange(request: Request, exchange_name: str) -> dict[str, Any]:
        config = admin.exchange(exchange_name)
        require_bank_access(request, admin.backend.controls, config.bank, change=False)
        return admin.show(config)

    @api.get("/c/exchange/{exchange_name}/status", tags=["hma"])
    async def exchange_status(request: Request, exchange_name: str) -> dict[str, Any]:
        config = admin.exchange(exchange_name)
        require_bank_access(request, admin.backend.controls, config.bank, change=False)
        return admin.status(exchange_name)

    @api.put("/c/exchange/{exchange_name}", tags=["hma"])
    async def update_exchange(
        request: Request, exchange_name: str, changes: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        """``{"enabled": bool}`` as HMA; ``{"sync_now": true}`` syncs out of turn."""
        config = admin.exchange(exchange_name)
        require_bank_access(request, admin.backend.controls, config.bank)
        return await admin.update(exchange_name, changes)

    @api.delete("/c/exchange/{exchange_name}", tags=["hma"])
    async def delete_exchange(request: Request, exchange_name: str) -> dict[str, str]:
        config = admin.book.configs.get(exchange_name)
        if config is not None:
            require_bank_access(request, admin.backend.controls, config.bank)
        await admin.delete(exchange_name)
        return {"message": "Exchange deleted"}


NO_SECRETS = (
    "credentials are never sent over HTTP or kept in Kafka: put them in a file or an "
    "environment variable on the machine of modstream exchange-sync and send "
    '{"credential_json": {"file": PATH}} or {"credential_json": {"env": VARIABLE}}'
)


CONFINED = (
    "a credential reference made over HTTP names a file inside MODSTREAM_API_CREDENTIALS_DIR "
    f'({{"file": NAME}}) or a variable {CREDENTIALS_ENV_PREFIX}<NAME> ({{"env": ...}})'
)


def confined_reference(reference: dict[str, str], directory: Path | None) -> dict[str, str] | None:
    """The reference if it names only what credentials may be in: a variable with the
    prefix, or a file inside ``directory`` (as a full path; judged by its name alone, the
    file being on the sync service's machine). None otherwise."""
    if "env" in reference:
        return reference if _CREDENTIALS_ENV.match(reference["env"]) else None
    if directory is None:
        return None
    root = posixpath.normpath(str(directory))
    full = posixpath.normpath(posixpath.join(root, reference["file"]))
    return {"file": full} if full.startswith(root.rstrip("/") + "/") else None


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        raise ApiError(400, "Field `api_json`: values are strings, numbers, booleans or lists")
    return str(value)


def _field_schema(field: dataclasses.Field[Any], kind: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    if origin is typing.Union:
        kind, required = next(a for a in args if a is not type(None)), False
        origin, args = typing.get_origin(kind), typing.get_args(kind)
    choices = None
    if origin in (set, frozenset):
        type_name = "set_of_number" if args and args[0] is int else "set_of_string"
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        type_name, choices = "enum", [str(member.value) for member in kind]
    else:
        type_name = {int: "number", float: "number", bool: "boolean"}.get(kind, "string")
    default = None if field.default is dataclasses.MISSING else field.default
    entry = _schema_entry(field.name, type_name, required, field.metadata.get("help", ""))
    return entry | {"default": default, "choices": choices}


def _schema_entry(name: str, type_name: str, required: bool, help_text: str) -> dict[str, Any]:
    return {"name": name, "type": type_name, "required": required, "default": None,
            "help": help_text, "choices": None}  # fmt: skip


def _seconds(moment: float | None) -> int | None:
    return None if moment is None else int(moment)
