"""`dicomd user add|list|remove|role|password`: accounts for the HTTP API."""

from __future__ import annotations

import sys

import click

from dicomd import storage
from dicomd.auth import ROLES, Auth
from dicomd.catalog import Catalog
from dicomd.cli.common import json_option, print_json, print_table, store_options
from dicomd.config import Config
from dicomd.errors import Ambiguous, InvalidInput, NotFound
from dicomd.layout import Layout
from dicomd.routing import UNASSIGNED


def _auth(config: Config) -> tuple[Auth, Catalog]:
    layout = Layout(config.data_dir)
    storage.ensure_dir(layout.root)
    catalog = Catalog(config.catalog_url)
    return Auth(catalog), catalog


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise InvalidInput("empty password")
    return password


def _check_project(config: Config, project: str) -> str:
    if project == UNASSIGNED:
        raise InvalidInput("Unassigned is for site admins only; use --admin")
    found = config.matching_projects(project)
    if not found:
        raise NotFound(f"no project {project!r} in {config.source}")
    if len(found) > 1:
        raise Ambiguous(f"{project!r} names projects {', '.join(found)} in {config.source}: use a project ID")
    return found[0]


@click.group()
def user() -> None:
    """Manage users of the HTTP API (site admins and per-project roles).

    Example:

        echo 's3cret-pass' | dicomd user add alice --project demo --role member --password-stdin
    """


@user.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user a site admin (sees every project and Unassigned).")
@click.option("--project", help="Give a role in this project.")
@click.option("--role", type=click.Choice(ROLES), help="owner, member or collaborator (with --project).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@store_options
def add(config: Config, name: str, admin: bool, project: str | None, role: str | None, password_stdin: bool) -> None:
    """Create a user; the password is prompted for (or read with --password-stdin).

    Example:

        dicomd user add bob --project demo --role owner
    """
    if bool(project) != bool(role):
        raise click.UsageError("--project and --role go together")
    pid = _check_project(config, project) if project else ""
    password = _read_password(password_stdin)
    auth, catalog = _auth(config)
    try:
        auth.add_user(name, password, admin=admin)
        if pid and role:
            auth.set_role(name, pid, role)
    finally:
        catalog.close()
    click.echo(f"user {name} added" + (" (site admin)" if admin else "") + (f", {role} of {pid}" if pid else ""))


@user.command("role")
@click.argument("name")
@click.option("--project", required=True, help="The project.")
@click.option("--role", type=click.Choice([*ROLES, "none"]), required=True, help="The role; 'none' removes it.")
@store_options
def set_role(config: Config, name: str, project: str, role: str) -> None:
    """Give a user a role in a project, or take it away with --role none.

    Example:

        dicomd user role alice --project demo --role owner
    """
    pid = _check_project(config, project)
    auth, catalog = _auth(config)
    try:
        if role == "none":
            auth.remove_role(name, pid)
        else:
            auth.set_role(name, pid, role)
    finally:
        catalog.close()
    click.echo(f"user {name}: {role} in {pid}")


@user.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@store_options
def password(config: Config, name: str, password_stdin: bool) -> None:
    """Set a user's password; the user's login sessions and alias tokens are revoked.

    Example:

        dicomd user password alice
    """
    auth, catalog = _auth(config)
    try:
        auth.set_password(name, _read_password(password_stdin))
    finally:
        catalog.close()
    click.echo(f"password of {name} changed")


@user.command("list")
@json_option
@store_options
def list_users(config: Config, as_json: bool) -> None:
    """List users, whether they are site admins, and their roles.

    Example:

        dicomd user list --json
    """
    auth, catalog = _auth(config)
    try:
        users = auth.users()
    finally:
        catalog.close()
    rows = [{"name": u.name, "admin": u.admin, "roles": dict(sorted(u.roles.items()))} for u in users]
    if as_json:
        print_json(rows)
    else:
        print_table([{**r, "admin": "yes" if r["admin"] else ""} for r in rows], ["name", "admin", "roles"])


@user.command("remove")
@click.argument("name")
@store_options
def remove(config: Config, name: str) -> None:
    """Remove a user with their roles, login sessions and tokens.

    Example:

        dicomd user remove bob
    """
    auth, catalog = _auth(config)
    try:
        auth.remove_user(name)
    finally:
        catalog.close()
    click.echo(f"user {name} removed")


commands = [user]
