"""Where openft may send requests on a user's behalf (evaluation endpoints, LLM judges, distillation teachers).

A user-supplied base URL must not turn the worker into a way into the server's own network: every address
its host resolves to must be a public one, unless the operator allows it in OPENFT_OUTBOUND_ALLOW, a
comma-separated list of host names, addresses and CIDR ranges (``localhost,10.0.0.0/8,vllm.internal``),
or ``*`` for any. The check runs when a request is accepted and again on every connection the worker
makes (``guarded_http_client``), which follows no redirects.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import httpx

from openft.config import get_settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SCHEMES = ("http", "https")


class OutboundRefused(ValueError):
    """The URL may not be reached; the message says why and how an operator can allow it."""


def check_url(
    url: str,
    allow: Sequence[str] | None = None,
    *,
    resolve: Callable[[str, int], list[str]] | None = None,
) -> None:
    """Refuse a URL whose host is (or resolves to) a loopback, private, link-local or otherwise
    non-public address, unless ``allow`` (default: OPENFT_OUTBOUND_ALLOW) covers it."""
    allow = get_settings().outbound_allow if allow is None else allow
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"'{url}' is not a valid URL ({exc}).") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise OutboundRefused(f"'{url}' must be an http:// or https:// URL with a host name.")
    if "*" in allow:
        return
    host = parts.hostname.lower().rstrip(".")
    hosts, networks = _parse_allow(allow)
    if host in hosts:
        return
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [_address(text) for text in (resolve or _resolve)(host, port)]
    except OSError as exc:
        raise OutboundRefused(f"The host '{host}' cannot be resolved ({exc.strerror or exc}).") from None
    if not addresses:
        raise OutboundRefused(f"The host '{host}' resolves to no address.")
    for address in addresses:
        if _is_public(address) or any(address in network for network in networks):
            continue
        raise OutboundRefused(
            f"'{host}' resolves to {address}, {_describe(address)} address, which openft does not contact "
            "on a user's behalf. An operator can allow it with OPENFT_OUTBOUND_ALLOW."
        )


def _resolve(host: str, port: int) -> list[str]:
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_public(address: Address) -> bool:
    return address.is_global and not address.is_multicast


def _describe(address: Address) -> str:
    for kind in ("unspecified", "loopback", "link_local", "private", "multicast", "reserved"):
        if getattr(address, f"is_{kind}"):
            return ("an " if kind == "unspecified" else "a ") + kind.replace("_", "-")
    return "a non-public"


def _parse_allow(allow: Sequence[str]) -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    hosts: set[str] = set()
    networks = []
    for entry in allow:
        entry = entry.strip().lower()
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if entry:
                hosts.add(entry.rstrip("."))
    return hosts, networks


class GuardedTransport(httpx.BaseTransport):
    """Checks every request's URL, just before connecting, so a later DNS answer cannot point it inward."""

    def __init__(self, allow: Sequence[str] | None = None) -> None:
        self.allow = allow
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            check_url(str(request.url), self.allow)
        except OutboundRefused as exc:
            raise httpx.ConnectError(f"openft refused to connect: {exc}", request=request) from None
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def guarded_http_client(allow: Sequence[str] | None = None, **kwargs) -> httpx.Client:
    """An httpx client for user-supplied endpoints: every URL checked, redirects not followed."""
    return httpx.Client(transport=GuardedTransport(allow), follow_redirects=False, **kwargs)
