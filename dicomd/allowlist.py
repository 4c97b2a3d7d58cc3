"""Sender allowlists in XNAT's form: `AE`, `AE@ip`, `AE@cidr`. Pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class AllowEntry:
    ae_title: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None

    def matches(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if self.network is None:
            return True
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False


def parse_entry(text: str) -> AllowEntry:
    ae, sep, where = text.strip().partition("@")
    ae = ae.strip()
    if not ae or len(ae) > 16:
        raise ValueError(f"allowlist entry {text!r}: the AE title must be 1 to 16 characters")
    if not sep:
        return AllowEntry(ae, None)
    try:
        return AllowEntry(ae, ipaddress.ip_network(where.strip(), strict=False))
    except ValueError:
        raise ValueError(f"allowlist entry {text!r}: {where!r} is not an IP address or CIDR") from None


@dataclass(frozen=True)
class Allowlist:
    entries: tuple[AllowEntry, ...] = ()

    @classmethod
    def parse(cls, texts: tuple[str, ...] | list[str]) -> "Allowlist":
        return cls(tuple(parse_entry(t) for t in texts))

    def allows(self, ae_title: str, address: str) -> bool:
        return not self.entries or any(e.matches(ae_title, address) for e in self.entries)
