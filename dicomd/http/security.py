"""The HTTP API's defences against hostile users: throttled password checks (see
dicomd.ratelimit), and what a login may be used for."""

from __future__ import annotations

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
    Requests without any of these headers come from programs (xnatpy, pyxnat, curl) and pass.
    """
    if method.upper() not in UNSAFE_METHODS:
        return None
    host = _netloc(headers.get("host", ""), "")
    for name in ("origin", "referer"):
        value = headers.get(name, "").strip()
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
