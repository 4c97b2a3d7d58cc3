"""Archive processors as people see and change them (`/xapi/processors`), with the permission checks.

A project's list (what runs for it, in order) is readable by its collaborators and up; its owners
(and site admins) change it within what dicomd.processors.check_change allows, or reset it to the
site's defaults. The site's defaults are site admins' to read and change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicomd import operations, processors
from dicomd.auth import MANAGE, READ
from dicomd.catalog.processors import SITE
from dicomd.errors import Forbidden, InvalidInput, NotFound
from dicomd.routing import UNASSIGNED

if TYPE_CHECKING:
    from dicomd.operations import Actor
    from dicomd.stores import Stores


def _project(stores: "Stores", actor: "Actor", name: str, action: str) -> str:
    actor.require(action, name)  # before anything is looked up
    project = operations.project_id(stores, name)
    if project == UNASSIGNED:
        raise InvalidInput("Unassigned is never archived: it has no processors")
    return project


def project_list(stores: "Stores", actor: "Actor", name: str) -> list[dict[str, Any]]:
    project = _project(stores, actor, name, READ)
    return [p.xnat("project", project) for p in processors.processors(stores.config, stores.catalog, project)]


def change_project(stores: "Stores", actor: "Actor", name: str, items: Any) -> list[dict[str, Any]]:
    """Reorder or switch the project's steps; the reply is the new list."""
    project = _project(stores, actor, name, MANAGE)
    current = processors.processors(stores.config, stores.catalog, project)
    settings = processors.check_change(current, items, project=project)
    stores.catalog.save_processor_settings(project, settings, actor.history_name)
    return project_list(stores, actor, project)


def reset_project(stores: "Stores", actor: "Actor", name: str) -> list[dict[str, Any]]:
    project = _project(stores, actor, name, MANAGE)
    stores.catalog.save_processor_settings(project, {}, actor.history_name)
    return project_list(stores, actor, project)


def _require_admin(actor: "Actor") -> None:
    if not actor.admin:
        raise Forbidden("only site admins may read or change the site's archive processors")


def site_list(stores: "Stores", actor: "Actor") -> list[dict[str, Any]]:
    _require_admin(actor)
    return [p.xnat("site") for p in processors.processors(stores.config, stores.catalog, None)]


def site_summary(stores: "Stores", actor: "Actor") -> list[dict[str, Any]]:
    """XNAT's enabled/summary: the enabled site defaults, for any user."""
    return [{"id": p.name, "label": row["label"], "location": p.location, "priority": p.priority}
            for p in processors.processors(stores.config, stores.catalog, None)
            if p.enabled and (row := p.xnat("site"))]


def site_processor(stores: "Stores", actor: "Actor", name: str) -> dict[str, Any]:
    for row in site_list(stores, actor):
        if row["id"] == name:
            return row
    raise NotFound(f"no archive processor {name!r} (known: {', '.join(processors.STEPS)})")


def change_site(stores: "Stores", actor: "Actor", items: Any) -> list[dict[str, Any]]:
    _require_admin(actor)
    current = processors.processors(stores.config, stores.catalog, None)
    stores.catalog.save_processor_settings(SITE, processors.check_change(current, items), actor.history_name)
    return site_list(stores, actor)


def change_site_processor(stores: "Stores", actor: "Actor", name: str, body: Any) -> dict[str, Any]:
    """XNAT's `PUT site/id/{id}`: ``{"enabled": bool, "priority": n}`` for one step."""
    _require_admin(actor)
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object")
    current = processors.processors(stores.config, stores.catalog, None)
    names = [p.name for p in current]
    if name not in names:
        raise NotFound(f"no archive processor {name!r} (known: {', '.join(names)})")
    priority = body.get("priority", names.index(name) + 1)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= len(names):
        raise InvalidInput(f"priority: an integer from 1 to {len(names)}")
    names.remove(name)
    names.insert(priority - 1, name)
    item: dict[str, Any] = {"id": name}
    if "enabled" in body:
        item["enabled"] = body["enabled"]
    items = [item if n == name else n for n in names]
    change_site(stores, actor, items)
    return site_processor(stores, actor, name)
