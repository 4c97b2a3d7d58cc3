"""Option bundles and output helpers shared by the commands."""

from __future__ import annotations

import json
import os
import shutil
from functools import wraps
from typing import Any, Callable, Iterable, Sequence

import click

from dicomd import config as config_mod
from dicomd.config import Config


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--config and --data-dir, taken by every command that touches the stores."""

    @click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), envvar="DICOMD_CONFIG",
        help="TOML configuration file (default: $DICOMD_CONFIG, else built-in defaults).",
    )
    @click.option("--data-dir", type=click.Path(file_okay=False), help="Override data_dir from the config.")
    @wraps(fn)
    def wrapper(*args: Any, config_path: str | None, data_dir: str | None, **kwargs: Any) -> Any:
        return fn(*args, config=load_config(config_path, data_dir=data_dir), **kwargs)

    return wrapper


def load_config(path: str | None, **overrides: Any) -> Config:
    return config_mod.load(path, overrides)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def pass_ctx(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.pass_context(fn)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def print_table(rows: Sequence[dict[str, Any]], columns: Iterable[str]) -> None:
    """Aligned columns, truncated to the terminal width."""
    cols = list(columns)
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    width = shutil.get_terminal_size((200, 20)).columns if os.isatty(1) else 10_000
    def line(values: Sequence[str]) -> str:
        text = "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
        return text if len(text) <= width else text[: max(width - 1, 1)] + "…"
    header = line(cols)
    click.echo(click.style(header, bold=True) if os.isatty(1) else header)
    for row in cells:
        click.echo(line(row))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)
