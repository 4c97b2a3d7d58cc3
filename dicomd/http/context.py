"""What a route reads from its request: the logged-in user and the stores (set up by http/app.py)."""

from __future__ import annotations

from fastapi import Request

from dicomd.auth import User
from dicomd.errors import Forbidden
from dicomd.stores import Stores

VERSION = "1.8.10"  # the XNAT release whose API dicomd follows (clients branch on it)
COOKIE = "JSESSIONID"


def current_user(request: Request) -> User:
    """The logged-in user (set by the login gate)."""
    user = getattr(request.state, "user", None)
    if user is None:  # only reachable on a public path by mistake
        raise Forbidden("login required")
    return user


def stores_of(request: Request) -> Stores:
    return request.app.state.stores
