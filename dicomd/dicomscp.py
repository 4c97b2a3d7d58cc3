"""DICOM receivers as XNAT's DICOM SCP API shows them (`/xapi/dicomscp`), and their changes.

Two kinds: the config file's (`[[receivers]]`, ids `config-1`, `config-2`, ...), listed and read-only
here (change the file and restart), and receivers added over the API (integer ids), stored in the
catalog and started, changed, enabled, disabled and removed at run time by the daemon's
`ReceiverSet`; the daemon starts the enabled ones again after a restart. Every logged-in user may
list receivers (senders need the AE title and port); only site admins see the allow lists and the
senders' addresses, and only site admins change anything.

Settings are checked as the config file checks them (`dicomd.config.check_receiver`) and a port
may serve one receiver (409 otherwise). XNAT's fields dicomd has no use for are refused when set
(routing expressions, direct archive, custom processing), so a client never believes they apply.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import TYPE_CHECKING, Any, Mapping

from dicomd.catalog import ReceiverRow
from dicomd.config import check_receiver
from dicomd.errors import ConfigError, Conflict, Forbidden, InvalidInput, NotFound
from dicomd.receiverset import ReceiverSet, ReceiverState, receiver_config

if TYPE_CHECKING:
    from dicomd.config import ReceiverConfig
    from dicomd.operations import Actor
    from dicomd.stores import Stores

CONFIG_PREFIX = "config-"
_SETTABLE = {"aeTitle", "port", "bind", "enabled", "whitelistEnabled", "whitelist", "project", "anonymizationEnabled"}
_UNSUPPORTED = ("customProcessing", "directArchive", "routingExpressionsEnabled")
_IGNORED = {  # XNAT's fields that carry nothing here (and what this module itself shows)
    "id", "identifier", "fileNamer", "created", "timestamp", "label", "projectRoutingExpression",
    "subjectRoutingExpression", "sessionRoutingExpression", "directArchiveOverwrite", "source", "readOnly", "state",
    "listeningPort", "error", "instancesReceived", "lastAssociation", *_UNSUPPORTED,
}
NEW = ReceiverRow(0, "", 8104, "0.0.0.0", (), "", False, True, 0.0, 0.0, "")


# ---------------------------------------------------------------- reading


def receivers(stores: "Stores", actor: "Actor", control: ReceiverSet | None) -> list[dict[str, Any]]:
    """Every receiver: the config file's first, then the stored ones by id."""
    shown = [_configured(stores, actor, control, i) for i in range(len(stores.config.receivers))]
    return shown + [_stored(actor, control, row) for row in stores.catalog.receivers()]


def receiver(stores: "Stores", actor: "Actor", control: ReceiverSet | None, key: str) -> dict[str, Any]:
    index = _config_index(stores, key)
    if index is not None:
        return _configured(stores, actor, control, index)
    return _stored(actor, control, stores.catalog.receiver(_id(key)))


def by_title(stores: "Stores", actor: "Actor", control: ReceiverSet | None, title: str, port: int) -> dict[str, Any]:
    for shown in receivers(stores, actor, control):
        if shown["aeTitle"] == title and port in (shown["port"], shown["listeningPort"]):
            return shown
    raise NotFound(f"no DICOM receiver {title}:{port}")


# ---------------------------------------------------------------- changing (site admins)


def create(stores: "Stores", actor: "Actor", control: ReceiverSet | None, body: Any) -> dict[str, Any]:
    _require_admin(actor)
    row = _checked(stores, control, NEW, body, receiver_id=0)
    saved = stores.catalog.save_receiver(row, actor.history_name)
    if control is not None:
        try:
            control.apply(saved.id, saved)
        except Conflict:
            stores.catalog.delete_receiver(saved.id)
            raise
    return _stored(actor, control, saved)


def update(stores: "Stores", actor: "Actor", control: ReceiverSet | None, key: str, body: Any) -> dict[str, Any]:
    """Change the fields ``body`` names (the others stay as they are)."""
    _require_admin(actor)
    old = _changeable(stores, key)
    row = _checked(stores, control, old, body, receiver_id=old.id)
    if control is not None:
        control.apply(old.id, row)  # Conflict leaves the old receiver running and the row unchanged
    return _stored(actor, control, stores.catalog.save_receiver(row, actor.history_name))


def set_enabled(stores: "Stores", actor: "Actor", control: ReceiverSet | None, key: str, flag: bool) -> dict[str, Any]:
    return update(stores, actor, control, key, {"enabled": flag})


def delete(stores: "Stores", actor: "Actor", control: ReceiverSet | None, key: str) -> None:
    _require_admin(actor)
    row = _changeable(stores, key)
    if control is not None:
        control.apply(row.id, None)
    stores.catalog.delete_receiver(row.id)


# ---------------------------------------------------------------- checks


def _require_admin(actor: "Actor") -> None:
    if not actor.admin:
        raise Forbidden("only site admins may change DICOM receivers")


def _config_index(stores: "Stores", key: str) -> int | None:
    if not key.startswith(CONFIG_PREFIX):
        return None
    number = key[len(CONFIG_PREFIX):]
    if not number.isdigit() or not 1 <= int(number) <= len(stores.config.receivers):
        raise NotFound(f"no DICOM receiver {key!r}")
    return int(number) - 1


def _id(key: str) -> int:
    if not key.isdigit() or not 1 <= int(key) <= 2**62:
        raise InvalidInput(f"a receiver id is a positive integer or config-N, not {key!r}"[:120])
    return int(key)


def _changeable(stores: "Stores", key: str) -> ReceiverRow:
    if _config_index(stores, key) is not None:
        raise Forbidden(f"receiver {key} is defined in {stores.config.source}: change it there (and restart)")
    return stores.catalog.receiver(_id(key))


def _checked(stores: "Stores", control: ReceiverSet | None, base: ReceiverRow, body: Any, *,
             receiver_id: int) -> ReceiverRow:
    """``base`` with the fields of ``body`` applied, checked as the config file is checked."""
    if not isinstance(body, Mapping):
        raise InvalidInput("expected a JSON object")
    unknown = sorted(set(body) - _SETTABLE - _IGNORED)
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_SETTABLE))})")
    for name in _UNSUPPORTED:
        if body.get(name):
            raise InvalidInput(f"{name} is not supported by dicomd (routing rules and archiving are per project, "
                               "in the config file)")
    values: dict[str, Any] = {}
    if "aeTitle" in body:
        values["ae_title"] = _text(body, "aeTitle")
    if "port" in body:
        port = body["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInput("port: an integer from 0 to 65535 (0 picks a free port at each start)")
        values["port"] = port
    if "bind" in body:
        try:
            values["bind"] = str(ipaddress.ip_address(_text(body, "bind")))
        except ValueError:
            raise InvalidInput("bind: an IP address to listen on, e.g. 0.0.0.0 or 127.0.0.1") from None
    for name, field, invert in (("enabled", "enabled", False), ("anonymizationEnabled", "prevent_anon", True)):
        if name in body:
            if not isinstance(body[name], bool):
                raise InvalidInput(f"{name}: true or false")
            values[field] = body[name] != invert
    if "project" in body:
        name = _text(body, "project", empty=True)
        project = stores.config.resolve_project(name) if name else ""
        if project is None:
            raise InvalidInput(f"project: no project {name!r}")
        values["project"] = project
    allowed = _allowed(body, base)
    if allowed is not None:
        values["allowed"] = allowed
    row = dataclasses.replace(base, **values)
    if not row.ae_title:
        raise InvalidInput("aeTitle is required")
    try:
        check_receiver(receiver_config(row), stores.config.projects, "receiver")
    except ConfigError as exc:
        raise InvalidInput(str(exc)) from None
    _check_port(stores, control, row, receiver_id)
    return row


def _text(body: Mapping[str, Any], name: str, *, empty: bool = False) -> str:
    value = body[name]
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise InvalidInput(f"{name}: expected a string")
    return value.strip()


def _allowed(body: Mapping[str, Any], base: ReceiverRow) -> tuple[str, ...] | None:
    """The allow list from XNAT's whitelistEnabled + whitelist (None: unchanged)."""
    if "whitelist" not in body and "whitelistEnabled" not in body:
        return None
    entries = body.get("whitelist", list(base.allowed))
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise InvalidInput("whitelist: a list of 'AE', 'AE@ip' or 'AE@cidr'")
    enabled = body.get("whitelistEnabled", bool(entries))
    if not isinstance(enabled, bool):
        raise InvalidInput("whitelistEnabled: true or false")
    if enabled and not entries:
        raise InvalidInput("whitelistEnabled needs a whitelist of senders")
    return tuple(e.strip() for e in entries) if enabled else ()


def _check_port(stores: "Stores", control: ReceiverSet | None, row: ReceiverRow, receiver_id: int) -> None:
    """One receiver per port: the config file's, and every enabled stored one (port 0 is always free)."""
    if not row.enabled or row.port == 0:
        return
    taken = {r.port: f"config receiver {r.ae_title}" for r in stores.config.receivers if r.port}
    if control is not None:
        taken.update(control.ports(besides=receiver_id))
    taken.update({r.port: f"receiver {r.id} ({r.ae_title})" for r in stores.catalog.receivers()
                  if r.enabled and r.id != receiver_id and r.port})
    if row.port in taken:
        raise Conflict(f"port {row.port} is already served by {taken[row.port]}")


# ---------------------------------------------------------------- XNAT's shape


def _shown(actor: "Actor", settings: "ReceiverConfig", state: ReceiverState | None, *, key: str | int, source: str,
           enabled: bool) -> dict[str, Any]:
    last = state.last_association if state else None
    association = None
    if last is not None:
        association = {"at": last.at, "callingAeTitle": last.calling_ae_title}
        if actor.admin:
            association["address"] = last.address
    running = bool(state and state.running)
    status = "listening" if running else ("failed" if state and state.error else "disabled" if not enabled else
                                          "stopped")
    return {
        "id": key, "aeTitle": settings.ae_title, "port": settings.port, "bind": settings.bind, "enabled": enabled,
        "whitelistEnabled": bool(settings.allowed), "whitelist": list(settings.allowed) if actor.admin else [],
        "project": settings.project, "anonymizationEnabled": not settings.prevent_anon,
        "customProcessing": False, "directArchive": False, "routingExpressionsEnabled": False,
        "identifier": "dicomObjectIdentifier", "label": f"{settings.ae_title}:{settings.port}",
        "source": source, "readOnly": source == "config", "state": status,
        "listeningPort": state.port if state else None, "error": state.error if state else "",
        "instancesReceived": state.received if state else 0, "lastAssociation": association,
    }


def _configured(stores: "Stores", actor: "Actor", control: ReceiverSet | None, index: int) -> dict[str, Any]:
    state = control.configured_state(index) if control is not None and index < len(control.configured) else None
    return _shown(actor, stores.config.receivers[index], state, key=f"{CONFIG_PREFIX}{index + 1}", source="config",
                  enabled=True)


def _stored(actor: "Actor", control: ReceiverSet | None, row: ReceiverRow) -> dict[str, Any]:
    state = control.state(row.id) if control is not None else None
    shown = _shown(actor, receiver_config(row), state, key=row.id, source="api", enabled=row.enabled)
    shown.update(created=row.created_at, timestamp=row.updated_at)
    return shown
