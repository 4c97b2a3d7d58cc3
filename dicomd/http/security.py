"""The HTTP API's defences against hostile users: throttled password checks (see
dicomd.ratelimit), cross-site request refusal, security headers on every response, and what
replies may show (no server paths in errors, no user names or addresses in SOURCE for non-admins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable, MutableMapping

from dicomd.auth import Auth, User
from dicomd.ratelimit import LoginThrottle


def check_password(auth: Auth, throttle: LoginThrottle | None, name: str, password: str, address: str,
                   via: str) -> User | None:
    """The user for a name + password (or alias + secret), None when they do not match; raises
    RateLimited while the name or the address is locked out, whatever the password."""
    if throttle is not None:
        throttle.check(name, address)
    user = auth.authenticate(name, password)
    if throttle is not None:
        if user is None:
            throttle.failed(name, address, via)
        else:
            throttle.succeeded(name, address)
    return user


# ---------------------------------------------------------------- cross-site requests

UNSAFE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def cross_site_refusal(method: str, headers: dict[str, str], via: str) -> str | None:
    """Why a state-changing request must be refused as cross-site request forgery, or None.

    A browser sends an ``Origin`` (or at least a ``Referer``) with a state-changing request; if it
    names another site than the ``Host`` the request went to, the request is refused, whether it
    carries the session cookie or cached basic-auth credentials. A cookie-authenticated request
    that a browser marks cross-site (``Sec-Fetch-Site``) without either header is refused too.
    ``Origin: null`` passes only with ``Sec-Fetch-Site: same-origin`` (our pages' Referrer-Policy
    no-referrer makes browsers send null). Requests without any of these headers come from
    programs (xnatpy, pyxnat, curl) and pass.
    """
    if method.upper() not in UNSAFE_METHODS:
        return None
    host = _netloc(headers.get("host", ""), "")
    same_origin = headers.get("sec-fetch-site", "") == "same-origin"
    for name in ("origin", "referer"):
        value = headers.get(name, "").strip()
        if value == "null" and same_origin:  # our own pages: Referrer-Policy no-referrer makes it null
            return None
        if value:
            if value == "null" or not host or _origin_netloc(value) != host:
                return f"cross-site request refused: {name.capitalize()} is not this site"
            return None
    if via == "session" and headers.get("sec-fetch-site", "") in ("cross-site", "same-site"):
        return "cross-site request refused: a browser sent it from another site"
    return None


def _origin_netloc(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _DEFAULT_PORTS:
        return ""
    return _netloc(rest.split("/", 1)[0].split("?", 1)[0], scheme.lower())


def _netloc(value: str, scheme: str) -> str:
    """host[:port] in lower case, without the scheme's default port (either default for a Host)."""
    value = value.strip().lower().rsplit("@", 1)[-1]
    if value.startswith("["):  # an IPv6 literal, [::1]:8080
        host, _, rest = value.partition("]")
        host, port = host + "]", rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.partition(":")
    defaults = (_DEFAULT_PORTS[scheme],) if scheme else tuple(_DEFAULT_PORTS.values())
    return host if not port or port in defaults else f"{host}:{port}"


# ---------------------------------------------------------------- what replies may show


def without_paths(message: str, data_dir: Path) -> str:
    """An error message for a client: paths under the data dir become relative to it, and the
    data dir itself is called ``data_dir`` (the server's layout is not the client's business)."""
    for root in {str(data_dir), str(data_dir.resolve())}:
        message = message.replace(root + "/", "").replace(root, "data_dir")
    return message


def public_source(source: str) -> str:
    """A session's SOURCE as non-admins see it: the kind (and the sender's AE title), without
    user names and addresses ("HTTP:alice@10.0.0.7" -> "HTTP", "DICOM:CT1@10.0.0.9" -> "DICOM:CT1")."""
    kind, _, rest = source.partition(":")
    return f"{kind}:{rest.rpartition('@')[0]}" if kind == "DICOM" and "@" in rest else kind


def shown_to(user: User, row: dict[str, Any]) -> dict[str, Any]:
    """A prearchive row as ``user`` may see it (SOURCE in full for site admins only)."""
    if user.admin or "SOURCE" not in row:
        return row
    return {**row, "SOURCE": public_source(str(row["SOURCE"]))}


class SecurityHeaders:
    """Pure ASGI middleware adding to every response: nosniff, no framing, no referrer, and
    Strict-Transport-Security when the request came over HTTPS."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"no-referrer"))
    HSTS = (b"strict-transport-security", b"max-age=31536000")

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [*self.HEADERS, *((self.HSTS,) if scope.get("scheme") == "https" else ())]

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                   *(h for h in extra if h[0] not in present)]}
            await send(message)

        await self.app(scope, receive, with_headers)
