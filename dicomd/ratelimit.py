"""Back-off for password checks, per user name and per client address.

After `LIMIT` failed checks within `WINDOW` seconds, a name or an address is locked for a back-off
that doubles with each further failure (`BASE`, 2x BASE, 4x BASE, ... at most `CAP` seconds).
While locked, every attempt is refused before the password is looked at, the right password
included: that is what stops guessing. A success clears the user name's record (not the
address's: a guesser with an account of its own must not be able to reset its address). A record
is forgotten once it has seen no failure for `CAP` + `WINDOW` seconds.

Failures and lock-outs are audited through ``audit(kind, detail)`` (the catalog's events), with
the peer-supplied name escaped and never the password.

Example::

    throttle = LoginThrottle(audit=catalog.event)
    throttle.check("alice", "10.0.0.7")      # raises RateLimited while either is locked
    throttle.failed("alice", "10.0.0.7")     # after a wrong password
    throttle.succeeded("alice", "10.0.0.7")  # after a right one
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from dicomd.errors import RateLimited
from dicomd.logsafe import escape

LIMIT = 5
WINDOW = 300.0
BASE = 1.0
CAP = 900.0
MAX_RECORDS = 10_000  # records kept at most (names and addresses are peer-supplied)

Audit = Callable[[str, dict[str, Any]], None]


@dataclass
class _Record:
    failures: deque[float] = field(default_factory=deque)
    strikes: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Thread-safe failure counts and lock-outs; ``audit(kind, detail)`` records lock-outs."""

    def __init__(self, audit: Audit | None = None, *, limit: int = LIMIT, window: float = WINDOW,
                 base: float = BASE, cap: float = CAP, clock: Callable[[], float] = time.monotonic) -> None:
        self.audit = audit
        self.limit, self.window, self.base, self.cap = limit, window, base, cap
        self.clock = clock
        self._records: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    def check(self, name: str, address: str) -> None:
        """Raise RateLimited (with the seconds to wait) when the name or the address is locked."""
        now = self.clock()
        with self._lock:
            waits = [r.locked_until - now for r in (self._live(("user", name), now), self._live(("address", address), now))
                     if r is not None and r.locked_until > now]
        if waits:
            retry = max(1, math.ceil(max(waits)))
            raise RateLimited(f"too many failed logins: try again in {retry} s", retry_after=retry)

    def failed(self, name: str, address: str, via: str = "") -> None:
        """Count a failed check; audits it ("login_failed") and any lock-out ("login_locked")."""
        self._audit("login_failed", {"user": escape(name), "address": escape(address), "via": via})
        now = self.clock()
        locked: list[tuple[str, str, float, int]] = []
        with self._lock:
            for key in (("user", name), ("address", address)):
                record = self._live(key, now) or self._new(key)
                while record.failures and record.failures[0] < now - self.window:
                    record.failures.popleft()
                record.failures.append(now)
                record.last_failure = now
                if record.strikes or len(record.failures) >= self.limit:
                    backoff = min(self.base * 2 ** record.strikes, self.cap)
                    record.strikes += 1
                    record.locked_until = now + backoff
                    locked.append((key[0], key[1], backoff, len(record.failures)))
        for kind, value, backoff, failures in locked:
            self._audit("login_locked", {kind: escape(value), "seconds": backoff, "recent_failures": failures})

    def succeeded(self, name: str, address: str) -> None:
        with self._lock:
            self._records.pop(("user", name), None)

    def _live(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.locked_until <= now and now - record.last_failure > self.cap + self.window:
            del self._records[key]
            return None
        return record

    def _new(self, key: tuple[str, str]) -> _Record:
        if len(self._records) >= MAX_RECORDS:
            oldest = sorted(self._records, key=lambda k: self._records[k].last_failure)
            for old in oldest[: MAX_RECORDS // 2]:
                if self._records[old].locked_until <= self.clock():
                    del self._records[old]
        record = self._records[key] = _Record()
        return record

    def _audit(self, kind: str, detail: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit(kind, detail)
