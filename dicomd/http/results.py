"""XNAT's listing formats: `{"ResultSet": {"Result": [...]}}` JSON, CSV and a plain HTML table."""

from __future__ import annotations

import html
import json
import re
from typing import Any, Iterable, Sequence

from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from dicomd.errors import InvalidInput

FORMATS = ("json", "csv", "html")


def pick_format(value: str | None, default: str = "json") -> str:
    fmt = (value or default).lower()
    if fmt in ("single",):
        return "json"
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")
    return fmt


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def csv_cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: text starting a formula gets a leading quote."""
    text = _text(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_line(values: Iterable[Any]) -> str:
    """One CSV row ending in \\n. A cell holding a comma, a quote, a CR or a LF is quoted (the csv
    module leaves a CR unquoted when the line ends in LF, which would split the row in a reader)."""
    cells = (csv_cell(v) for v in values)
    return ",".join('"' + c.replace('"', '""') + '"' if _NEEDS_QUOTES.search(c) else c for c in cells) + "\n"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def columns_of(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def result_set(rows: Sequence[dict[str, Any]], fmt: str, *, columns: Iterable[str] | None = None,
               title: str = "") -> Response:
    cols = columns_of(rows, columns)
    if fmt == "csv":
        lines = [csv_line(cols), *(csv_line([row.get(c) for c in cols]) for row in rows)]
        return PlainTextResponse("".join(lines), media_type="text/csv")
    if fmt == "html":
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_text(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
        )
        page = f"<html><body><h3>{html.escape(title)}</h3><table><tr>{head}</tr>{body}</table></body></html>"
        return HTMLResponse(page)
    payload = {"ResultSet": {"Result": list(rows), "totalRecords": str(len(rows)), "title": title}}
    return JSONResponse(payload)


def uri_list(uris: Sequence[str], accept: str = "") -> Response:
    """XNAT's reply to import/archive: one URI per line, CRLF, text/uri-list (text/plain if asked)."""
    media = "text/plain" if "text/plain" in accept and "text/uri-list" not in accept else "text/uri-list"
    return PlainTextResponse("".join(u + "\r\n" for u in uris), media_type=media)
