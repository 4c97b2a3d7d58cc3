"""Archive processors: the steps each project's data goes through on its way into the archive, in the
order they run, as `/xapi/processors` shows them and the archive step (dicomd.anonymize.hooks)
follows them.

    site_script  ingest   the site's DicomEdit script ([anonymize] site_script), on every instance
    mappings     build    custom DICOM mappings -> session and scan fields (read as it will be archived)
    profile      archive  the project's PS3.15 profile with its options
    script       archive  the project's DicomEdit script

What runs comes from the config; the catalog keeps the order and enabled flags people changed, per
project, with the site's defaults (scope ''). Only what is safe may change (`check_change`):

- de-identification (profile, script) runs exactly when the project's config says so; nobody turns
  it on or off over the API (off: 403, on: 400), but its two steps may swap places;
- the mappings step may be turned off and on; the ingest and build steps stay where they are;
- the site script is the config's alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from dicomd.catalog.processors import SITE
from dicomd.errors import Forbidden, InvalidInput
from dicomd.mappings import MappingStore

if TYPE_CHECKING:
    from dicomd.catalog import Catalog
    from dicomd.config import Config

SITE_SCRIPT, MAPPINGS, PROFILE, SCRIPT = "site_script", "mappings", "profile", "script"
LOCATIONS = ("ingest", "build", "archive")
STEPS: Mapping[str, tuple[str, str, str]] = {  # name -> (location, label, processorClass)
    SITE_SCRIPT: ("ingest", "Site DicomEdit script", "dicomd.anonymize.SiteScript"),
    MAPPINGS: ("build", "Custom DICOM mappings", "dicomd.mappings"),
    PROFILE: ("archive", "PS3.15 de-identification profile", "dicomd.anonymize.profile"),
    SCRIPT: ("archive", "Project DicomEdit script", "dicomd.anonymize.script"),
}
DEFAULT_ORDER = (SITE_SCRIPT, MAPPINGS, PROFILE, SCRIPT)
DE_IDENTIFICATION = (PROFILE, SCRIPT)


@dataclass(frozen=True)
class Processor:
    """One step as it runs for a project (or, at site scope, as the default)."""

    name: str
    location: str
    priority: int  # 1-based place in the list
    enabled: bool  # it runs
    configured: bool  # the config sets it up (a profile, a script file, a mapping)
    movable: bool
    switchable: bool  # its enabled flag may change over the API
    set_by: str  # config | default | site | project: where its place and flag come from
    note: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def xnat(self, scope: str, project: str = "") -> dict[str, Any]:
        """XNAT's ArchiveProcessorInstance fields, with dicomd's."""
        location, label, cls = STEPS[self.name]
        return {"id": self.name, "label": label, "processorClass": cls, "scope": scope,
                "projectIdsList": [project] if project else [], "location": location, "priority": self.priority,
                "enabled": self.enabled, "parameters": self.parameters, "configured": self.configured,
                "movable": self.movable, "switchable": self.switchable, "setBy": self.set_by, "note": self.note}


# ---------------------------------------------------------------- what runs


def _defaults(config: "Config", catalog: "Catalog", project: str | None) -> dict[str, dict[str, Any]]:
    """Each step before stored settings: configured, enabled, switchable, parameters, note."""
    site_script = config.anonymize.site_script
    steps: dict[str, dict[str, Any]] = {
        SITE_SCRIPT: dict(configured=bool(site_script), enabled=bool(site_script), switchable=False,
                          parameters={"script": site_script.rsplit("/", 1)[-1]} if site_script else {},
                          note="set in the config file ([anonymize] site_script); skipped for prevent_anon uploads"),
    }
    if project is None:
        steps[MAPPINGS] = dict(configured=True, enabled=True, switchable=True, parameters={},
                               note="the default for projects without their own setting")
        for name in DE_IDENTIFICATION:
            steps[name] = dict(configured=True, enabled=True, switchable=False, parameters={},
                               note="each project's config decides whether it runs; the site sets the default order")
        return steps
    mappings = MappingStore(catalog).list(project)
    steps[MAPPINGS] = dict(configured=bool(mappings), enabled=True, switchable=True,
                           parameters={"fields": [m.field_name for m in mappings]},
                           note="" if mappings else "no mapping applies to this project")
    settings = config.project(project)
    anonymize = settings.anonymize if settings else None
    on = bool(anonymize and anonymize.enabled)
    where = f"projects.{project}.anonymize"
    profile = bool(on and anonymize and anonymize.profile != "none")
    script = bool(on and anonymize and anonymize.script)
    steps[PROFILE] = dict(
        configured=profile, enabled=profile, switchable=False,
        parameters={"profile": anonymize.profile, "options": list(anonymize.options)} if profile and anonymize else {},
        note=f"on in the config file ({where}); only the config can turn it off" if profile else
        f"off in the config file ({where}); only the config can turn it on")
    steps[SCRIPT] = dict(
        configured=script, enabled=script, switchable=False,
        parameters={"script": anonymize.script.rsplit("/", 1)[-1]} if script and anonymize else {},
        note=f"on in the config file ({where}.script); only the config can turn it off" if script else
        f"no script in the config file ({where})")
    return steps


def processors(config: "Config", catalog: "Catalog", project: str | None) -> list[Processor]:
    """The steps in the order they run for ``project`` (None: the site's defaults)."""
    steps = _defaults(config, catalog, project)
    site = catalog.processor_settings(SITE)
    own = catalog.processor_settings(project) if project is not None else {}
    rows = []
    for default_place, name in enumerate(DEFAULT_ORDER, 1):
        step = steps[name]
        place, set_by, enabled = default_place, "config" if name != MAPPINGS else "default", step["enabled"]
        for scope, stored in (("site", site), ("project", own)):
            if name in stored:
                place, set_by = stored[name][0], scope
                if step["switchable"]:
                    enabled = stored[name][1]
        if name == MAPPINGS and step["configured"] is False and project is not None:
            enabled = False
        rows.append((LOCATIONS.index(STEPS[name][0]), place, default_place, name, enabled, set_by))
    rows.sort()
    return [Processor(name, STEPS[name][0], priority, enabled, steps[name]["configured"],
                      movable=STEPS[name][0] == "archive", switchable=steps[name]["switchable"], set_by=set_by,
                      note=steps[name]["note"], parameters=steps[name]["parameters"])
            for priority, (_loc, _place, _default, name, enabled, set_by) in enumerate(rows, 1)]


def archive_order(config: "Config", catalog: "Catalog", project: str) -> tuple[str, ...]:
    """The de-identification steps that run when ``project`` is archived, in order."""
    return tuple(p.name for p in processors(config, catalog, project) if p.location == "archive" and p.enabled)


def mappings_enabled(config: "Config", catalog: "Catalog", project: str) -> bool:
    return next(p.enabled for p in processors(config, catalog, project) if p.name == MAPPINGS)


# ---------------------------------------------------------------- changing safely


def check_change(current: Sequence[Processor], items: Any, *, project: str = "") -> dict[str, tuple[int, bool]]:
    """The settings to store for a PUT: ``items`` lists steps (`{"id": name, "enabled": bool}`, or a
    bare name) in the wanted order; within each location the named steps come first, in that order,
    then the others as they were. Refuses
    what is not safe (see the module docstring): Forbidden for turning de-identification off,
    InvalidInput for everything else."""
    if not isinstance(items, list) or not items:
        raise InvalidInput("expected a JSON list of processors ({\"id\": ..., \"enabled\": ...}) in the order to run")
    by_name = {p.name: p for p in current}
    wanted: list[tuple[str, bool]] = []
    for item in items:
        name, enabled = _item(item, by_name)
        if name in (w for w, _ in wanted):
            raise InvalidInput(f"processor {name!r} is named twice")
        wanted.append((name, by_name[name].enabled if enabled is None else enabled))
    for name, enabled in wanted:
        step = by_name[name]
        if enabled == step.enabled:
            continue
        if step.switchable:
            if enabled and not step.configured:
                raise InvalidInput(f"{name}: {step.note}")
            continue
        if name in DE_IDENTIFICATION and step.enabled and project:
            raise Forbidden(f"{name}: de-identification of project {project} is on in its config file; only the "
                            "config can turn it off")
        raise InvalidInput(f"{name}: {step.note}")
    flags = dict(wanted)
    locations = [LOCATIONS.index(STEPS[name][0]) for name in flags]
    if locations != sorted(locations):
        raise InvalidInput("steps run by location (ingest, then build, then archive): only the archive steps "
                           f"({', '.join(DE_IDENTIFICATION)}) may change places")
    order = []  # per location: the named steps in the order given, then the others as they were
    for location in LOCATIONS:
        order += [name for name in flags if STEPS[name][0] == location]
        order += [p.name for p in current if p.location == location and p.name not in flags]
    return {name: (place, flags.get(name, by_name[name].enabled)) for place, name in enumerate(order, 1)}


def _item(item: Any, known: Mapping[str, Processor]) -> tuple[str, bool | None]:
    if isinstance(item, str):
        name, enabled = item, None
    elif isinstance(item, dict):
        name, enabled = item.get("id", item.get("name")), item.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise InvalidInput(f"processor {name!r}: enabled is true or false")
    else:
        raise InvalidInput("each processor is {\"id\": NAME, \"enabled\": true|false} or a NAME")
    if not isinstance(name, str) or name not in known:
        raise InvalidInput(f"unknown processor {name!r} (known: {', '.join(known)})"[:200])
    return name, enabled
