"""Which URLs the scraper may fetch. Every hop (start page, next-page and product links, each redirect, robots.txt)
passes `HopGuard.check` before anything is sent, and `check_address`/`check_peer` around each connection, so a page or
a redirect cannot steer the crawler to another scheme, host or port, nor to an internal address (cloud metadata,
an admin panel on localhost, the private network).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class HopRefused(Exception):
    """A URL the crawler must not fetch (or a response it must not read); never retried."""


def host_key(url: str) -> tuple[str, int | None]:
    """URL or bare "host[:port]" → (lower-case host name, port or None for the scheme's default port)."""
    try:
        parts = urlsplit(url if "//" in url else f"//{url}")
        port = parts.port
    except ValueError:
        raise HopRefused(f"bad port in {url!r}") from None
    if port is not None and port == DEFAULT_PORTS.get(parts.scheme):
        port = None
    return (parts.hostname or "").rstrip("."), port


def address_refusal(address: str, allow_loopback: bool) -> str | None:
    """Why an IP address must not be contacted, or None. Loopback is allowed only on request (a local test server)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and allow_loopback:
        return None
    if not ip.is_global or ip.is_multicast:
        return f"{ip} is a loopback, private, link-local or reserved address"
    return None


@dataclass(frozen=True)
class HopGuard:
    """The hosts (name and port) the user configured, and whether loopback addresses may be contacted."""

    hosts: frozenset[tuple[str, int | None]]
    allow_loopback: bool = False

    @classmethod
    def build(cls, allowed_hosts: list[str] | None, start_urls: list[str], allow_loopback: bool) -> HopGuard:
        return cls(frozenset(host_key(h) for h in (allowed_hosts or start_urls)), allow_loopback)

    def allows(self, url: str) -> bool:
        try:
            self.check(url)
        except HopRefused:
            return False
        return True

    def check(self, url: str) -> None:
        """Scheme and host allow-list; no network."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise HopRefused(f"refused {url}: only http and https are fetched")
        host, port = host_key(url)
        if (host, port) not in self.hosts:
            where = host if port is None else f"{host}:{port}"
            raise HopRefused(f"refused {url}: {where} is not an allowed host")

    def check_address(self, url: str) -> None:
        """Resolve the host and refuse when any of its addresses is internal (a name can hide 127.0.0.1)."""
        parts = urlsplit(url)
        try:
            infos = socket.getaddrinfo(
                parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme], proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as error:
            raise HopRefused(f"cannot resolve {parts.hostname}: {error}") from None
        for info in infos:
            reason = address_refusal(info[4][0], self.allow_loopback)
            if reason:
                raise HopRefused(f"refused {url}: {reason}")

    def check_peer(self, url: str, peer: tuple | None) -> None:
        """The address actually connected to, checked again: DNS may answer differently the second time."""
        if peer is None:
            raise HopRefused(f"refused {url}: cannot tell which address was connected to")
        reason = address_refusal(peer[0], self.allow_loopback)
        if reason:
            raise HopRefused(f"refused {url}: connected to {reason}")
