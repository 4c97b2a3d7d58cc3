"""`dicomd mapping`: custom DICOM mappings (the same ones as /xapi/dicom_mappings)."""

from __future__ import annotations

import click

from dicomd.cli.common import json_option, open_stores, print_json, print_table, store_options
from dicomd.config import Config

COLUMNS = ("id", "scope", "scopeObjectId", "fieldName", "fieldType", "dicomTag", "level")


@click.group()
def mapping() -> None:
    """Custom DICOM mappings: header values extracted into catalog fields when a session is built."""


@mapping.command("list")
@store_options
@click.option("--project", help="Only mappings that apply to this project (site-wide ones and its own).")
@json_option
def list_mappings(config: Config, project: str | None, as_json: bool) -> None:
    """List DICOM mappings.

    Example:

        dicomd mapping list --project demo --json
    """
    from dicomd.mappings import MappingStore

    with open_stores(config) as stores:
        rows = [m.xnat() for m in MappingStore(stores.catalog).list(project)]
    print_json(rows) if as_json else print_table(rows, COLUMNS)


@mapping.command("add")
@store_options
@click.argument("field_name")
@click.argument("dicom_tag")
@click.option("--type", "field_type", default="string", show_default=True,
              type=click.Choice(["string", "integer", "float", "boolean", "date"]))
@click.option("--project", help="Project scope (default: site-wide).")
@click.option("--level", default="session", show_default=True, type=click.Choice(["session", "scan"]))
@json_option
def add_mapping(config: Config, field_name: str, dicom_tag: str, field_type: str, project: str | None,
                level: str, as_json: bool) -> None:
    """Create or update a mapping; DICOM_TAG is 0xGGGGEEEE, (gggg,eeee) or a keyword.

    Example:

        dicomd mapping add scanner 0x00081090 --project demo
    """
    from dicomd.mappings import MappingStore

    body = {"scope": "project" if project else "site", "scopeObjectId": project or "", "fieldName": field_name,
            "fieldType": field_type, "dicomTag": dicom_tag, "level": level}
    with open_stores(config) as stores:
        created = MappingStore(stores.catalog).upsert(body).xnat()
    print_json(created) if as_json else click.echo(f"mapping {created['id']}: {field_name} <- {created['dicomTag']}")


@mapping.command("remove")
@store_options
@click.argument("mapping_id", type=int)
def remove_mapping(config: Config, mapping_id: int) -> None:
    """Remove a mapping by id (values already extracted stay in the catalog).

    Example:

        dicomd mapping remove 3
    """
    from dicomd.mappings import MappingStore

    with open_stores(config) as stores:
        MappingStore(stores.catalog).delete(mapping_id)
    click.echo(f"mapping {mapping_id} removed")


commands = [mapping]
