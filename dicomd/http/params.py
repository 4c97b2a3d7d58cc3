"""Request parameters the XNAT way: from the query string and, for form posts, the body too."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import Request

from dicomd.errors import InvalidInput

_MAX_FORM = 1024 * 1024
_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off", "")


@dataclass(frozen=True)
class Params:
    """Parameter name -> values, case-sensitive names as XNAT has them."""

    items: tuple[tuple[str, str], ...]

    def all(self, *names: str) -> list[str]:
        return [v for k, v in self.items if k in names]

    def get(self, *names: str, default: str = "") -> str:
        values = self.all(*names)
        return values[0] if values else default

    def flag(self, *names: str, default: bool | None = None) -> bool | None:
        values = self.all(*names)
        if not values:
            return default
        value = values[0].strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise InvalidInput(f"{names[0]} must be true or false, not {values[0]!r}")


async def params(request: Request, *, read_form: bool = True) -> Params:
    """Query parameters plus urlencoded form fields (pyxnat posts `src=...&newProject=...`)."""
    items = list(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "")
    if read_form and content_type.startswith("application/x-www-form-urlencoded"):
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                raise InvalidInput("form body too large")
        items += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    elif read_form and content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=0)
        items += [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    return Params(tuple(items))
