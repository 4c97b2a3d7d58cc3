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
