"""`dicomd catalog migrate`: copy a SQLite catalog (and the pseudonym keys) into PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import click

from dicomd.cli.common import json_option, print_json, print_table, store_options
from dicomd import dburl
from dicomd.config import Config
from dicomd.dburl import DatabaseUrl
from dicomd.errors import InvalidInput


@click.group("catalog")
def catalog_group() -> None:
    """The catalog database (SQLite or PostgreSQL, see catalog.url)."""


@catalog_group.command("migrate")
@click.option("--to", "to_url", required=True, metavar="URL",
              help="The PostgreSQL database to copy the catalog into: postgresql://user:pass@host:port/db (empty).")
@click.option("--from", "from_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="The SQLite catalog to copy (default: catalog.url when it is a file, else data_dir/catalog.sqlite).")
@click.option("--keys-to", "keys_to", metavar="URL",
              help="Also copy the pseudonym keys and map into this PostgreSQL database (not the catalog's).")
@click.option("--with-keys", is_flag=True, help="Also copy the pseudonym keys into keys.url of the config (a postgresql:// URL).")
@click.option("--batch", "batch_rows", type=click.IntRange(1, 1_000_000), default=5000, show_default=True,
              help="Rows per transaction.")
@store_options
@json_option
def migrate(config: Config, to_url: str, from_path: str | None, keys_to: str | None, with_keys: bool,
            batch_rows: int, as_json: bool) -> None:
    """Copy the SQLite catalog into an empty PostgreSQL database, table by table, and verify the
    row counts. Stop dicomd first (it refuses while dicomd serve runs on this data directory). A run
    that stopped resumes where it stopped; a finished one only re-checks the counts. Then set
    catalog.url (and keys.url) in the config to the new URLs.

    Example:

        dicomd catalog migrate --to postgresql://dicomd:PASSWORD@db.example.org/dicomd --with-keys
    """
    from dicomd.catalogmove import migrate_catalog

    target = _postgresql(to_url, "--to", config)
    keys_target = None
    if keys_to and with_keys:
        raise InvalidInput("give --keys-to URL or --with-keys, not both")
    if keys_to:
        keys_target = _postgresql(keys_to, "--keys-to", config)
    elif with_keys:
        if not config.keys_url.is_postgresql:
            raise InvalidInput("--with-keys copies the keys to keys.url, which is not a postgresql:// URL in"
                               f" {config.source}; set it, or give --keys-to URL")
        keys_target = config.keys_url
    if keys_target is not None and dburl.same_database(keys_target, target):
        raise InvalidInput("the keys must not go into the catalog's database: give them their own database or schema")
    source = Path(from_path).resolve() if from_path else None

    def progress(table: str, done: int, total: int) -> None:
        if not as_json:
            click.echo(f"  {table}: {done}/{total}", err=True)

    reports = migrate_catalog(config, target, source=source, keys_target=keys_target,
                                         batch_rows=batch_rows, progress=progress)
    if as_json:
        print_json([r.as_json() for r in reports])
        return
    for report in reports:
        click.echo(f"{report.source} -> {report.target}")
        print_table([{"table": t, "rows": n} for t, n in report.counts.items()], ("table", "rows"))
        if report.already_done:
            click.echo("already migrated, counts verified")
        else:
            click.echo(f"{'resumed and ' if report.resumed else ''}copied, counts verified")


def _postgresql(value: str, option: str, config: Config) -> DatabaseUrl:
    try:
        url = dburl.parse(value, config.data_dir)
    except InvalidInput as exc:
        raise InvalidInput(f"{option}: {exc}") from None
    if not url.is_postgresql:
        raise InvalidInput(f"{option}: a postgresql:// URL is needed")
    return url


commands = [catalog_group]
