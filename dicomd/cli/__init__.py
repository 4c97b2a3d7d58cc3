"""The `dicomd` command. Each command is a few lines over the library; errors become one line."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import click

from dicomd.cli.common import pass_ctx  # noqa: F401  (re-exported for command modules)
from dicomd.errors import DicomdError


class DicomdGroup(click.Group):
    """Translates domain errors into one line on stderr and exit code 1 (usage errors stay 2)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DicomdError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=DicomdGroup)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(package_name="dicomd")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """dicomd: receive DICOM, stage it in a prearchive, anonymize and archive it.

    Example:

        dicomd serve --config config.example.toml
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    from dicomd.cli import archive, prearchive, serve

    main.add_command(serve.serve)
    main.add_command(serve.receiver_process)
    main.add_command(prearchive.prearchive)
    main.add_command(archive.archive)
    for name in ("ops", "anon", "users", "importing", "quarantine", "mappings", "catalog"):
        try:
            module = __import__(f"dicomd.cli.{name}", fromlist=["commands"])
        except ModuleNotFoundError:
            continue
        for command in getattr(module, "commands", []):
            main.add_command(command)


_register()
