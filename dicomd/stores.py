"""`Stores`: the folders, the catalog and the pipeline objects over them, opened in one place.

Three roles open them, each through :meth:`Stores.open`:

- ``Role.DAEMON``: `dicomd serve`. Records the configured projects and DICOM mappings in the
  catalog, so the HTTP API and the build step see them.
- ``Role.RECEIVER``: an extra receiver process (`receiver_processes > 1`). Only ingest is used;
  nothing is recorded on open.
- ``Role.CLI``: every other command. Opening changes nothing in the catalog (`dicomd check` is
  read-only); the daemon may hold its own stores on the same data directory at the same time.
  A command that archives, moves or deletes joins the cluster as a node (dicomd.cluster) while
  it does, so no daemon takes its work for abandoned.

The daemon and the CLI get a `Node` (their claims on cluster-wide work); a receiver process only
stages data and has none.

This module only composes: it imports the pipeline stages, never the receivers or the faces.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from dicomd import storage
from dicomd.anonymize.hooks import AnonymizationHooks, build_hooks
from dicomd.archive import Archiver
from dicomd.catalog import Catalog
from dicomd.cluster import Node
from dicomd.config import Config
from dicomd.ingest import Ingest
from dicomd.layout import Layout
from dicomd.mappings import MappingStore
from dicomd.prearchive import Prearchive

logger = logging.getLogger(__name__)


class Role(enum.Enum):
    DAEMON = "daemon"
    RECEIVER = "receiver"
    CLI = "cli"


@dataclass
class Stores:
    """What every command (daemon, receiver process or CLI) works on."""

    config: Config
    layout: Layout
    catalog: Catalog
    ingest: Ingest
    prearchive: Prearchive
    archiver: Archiver
    hooks: AnonymizationHooks
    role: Role = Role.DAEMON
    node: Node | None = None

    @classmethod
    def open(cls, config: Config, role: Role = Role.DAEMON) -> "Stores":
        layout = Layout(config.data_dir)
        for folder in layout.folders():
            storage.ensure_dir(folder)
        catalog = Catalog(config.catalog_url)
        if role is Role.DAEMON:
            _record_config(config, catalog)
        hooks = build_hooks(config, layout, catalog)
        ingest = Ingest(config, catalog, layout, site_transform=hooks.site_transform)
        node = None if role is Role.RECEIVER else Node(catalog, config.cluster, role=role.value)
        prearchive = Prearchive(
            config, catalog, layout, extract_fields=hooks.extract_fields, inspect_pixels=hooks.inspect_pixels,
            on_forget=ingest.forget_session, node=node
        )
        archiver = Archiver(config, catalog, layout, hooks.writers, node=node)
        return cls(config, layout, catalog, ingest, prearchive, archiver, hooks, role, node)

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()
        self.hooks.close()
        self.catalog.close()


def _record_config(config: Config, catalog: Catalog) -> None:
    """The daemon's view of the config, written where the API and the build step read it."""
    catalog.sync_projects(config.projects.values())
    if config.mappings:
        store = MappingStore(catalog)
        for mapping in config.mappings:
            store.upsert(mapping.as_xnat())
