"""Option bundles and output helpers shared by the commands."""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from functools import wraps
from typing import Any, Callable, Iterable, Iterator, Sequence

import click

from dicomd import config as config_mod
from dicomd.config import Config
from dicomd.lifecycle import TONES, Tone
from dicomd.views import local_stamp as stamp  # noqa: F401  (the commands' time format)

Column = str | tuple[str, str]  # a row key, or (row key, heading)

TONE_COLOURS = {Tone.BUSY: "cyan", Tone.GOOD: "green", Tone.PROBLEM: "red", Tone.HELD: "yellow",
                Tone.GONE: "bright_black"}
STATUS_COLOURS = {str(status): TONE_COLOURS[tone] for status, tone in TONES.items()}  # sessions and quarantine


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


@contextmanager
def open_stores(config: Config) -> Iterator[Any]:
    """The stores for one command, closed when it ends (the daemon may hold its own at the same time)."""
    from dicomd.stores import Role, Stores  # imported late: `dicomd --help` stays fast

    stores = Stores.open(config, Role.CLI)
    try:
        yield stores
    finally:
        stores.close()


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def yes_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation (for scripts).")(fn)


def pass_ctx(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.pass_context(fn)


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive action: at a terminal prompt, in a script demand --yes (usage error, exit 2)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Refusing without --yes when not at a terminal.")
    click.confirm(question, abort=True)


def report_error(message: str) -> None:
    """One line on stderr for a failure the command carries on after; -v adds the traceback."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    if root is not None and isinstance(root.obj, dict) and root.obj.get("verbose"):
        import traceback

        traceback.print_exc()
    click.echo(f"Error: {message}", err=True)


def is_terminal() -> bool:
    return os.isatty(1)


def colour(text: str, fg: str | None = None, bold: bool = False) -> str:
    """Styled text on a terminal, plain text in pipes and files."""
    if not is_terminal() or (fg is None and not bold):
        return text
    return click.style(text, fg=fg, bold=bold)


def human_bytes(value: int | float | None) -> str:
    size = float(value or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """`key   value` lines for a show command."""
    items = [(k, _cell(v)) for k, v in pairs]
    width = max((len(k) for k, _v in items), default=0)
    for key, value in items:
        click.echo(f"{colour(key.ljust(width), bold=True)}  {value}")


def print_table(rows: Sequence[dict[str, Any]], columns: Iterable[Column]) -> None:
    """Aligned columns fitted to the terminal width; the status column is coloured on a terminal."""
    cols = [(c, c) if isinstance(c, str) else c for c in columns]
    if not rows:
        click.echo("(none)")
        return
    width = shutil.get_terminal_size((200, 20)).columns if is_terminal() else None
    lines = format_table([[_cell(r.get(key)) for key, _t in cols] for r in rows], [t for _k, t in cols], width)
    click.echo(colour(lines[0], bold=True))
    status_index = next((i for i, (key, _t) in enumerate(cols) if key == "status"), None)
    for line in lines[1:]:
        if status_index is not None and is_terminal():
            line = _colour_status(line, lines[0], cols[status_index][1])
        click.echo(line)


def format_table(cells: Sequence[Sequence[str]], titles: Sequence[str], width: int | None = None) -> list[str]:
    """Header + rows, columns two spaces apart. With ``width``, the widest columns are shortened
    (cells cut with '…', never narrower than their title) until a line fits; only then are lines cut."""
    widths = [max(len(t), *(len(row[i]) for row in cells)) for i, t in enumerate(titles)]
    floors = [min(w, max(len(t), 6)) for w, t in zip(widths, titles)]
    if width is not None:
        while sum(widths) + 2 * (len(widths) - 1) > width:
            shrinkable = [i for i in range(len(widths)) if widths[i] > floors[i]]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: widths[i])] -= 1

    def fit(value: str, w: int) -> str:
        return value if len(value) <= w else value[: max(w - 1, 0)] + "…"

    def line(values: Sequence[str]) -> str:
        text = "  ".join(fit(v, w).ljust(w) for v, w in zip(values, widths)).rstrip()
        return text if width is None or len(text) <= width else text[: max(width - 1, 1)] + "…"

    return [line(titles), *(line(row) for row in cells)]


def _colour_status(line: str, header: str, title: str) -> str:
    start = header.find(title)
    if start < 0:
        return line
    value = line[start:].split("  ", 1)[0].strip()
    if not value or line[start:start + len(value)] != value:
        return line
    return line[:start] + colour(value, STATUS_COLOURS.get(value)) + line[start + len(value):]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value).replace("\n", " ")
