"""Every request to ``nst-engine serve`` is hostile until shown otherwise: who sent it, how big it is.

One ASGI middleware, in front of every route, checks in this order:

1. **Host** (DNS rebinding). A web page on any site can point its own name at 127.0.0.1 and then talk to this
   server from the user's browser as a same-origin page. The browser still sends that name in ``Host``, so only
   the names the server was started for are answered: the loopback names, the ``--host`` given, and names listed
   with ``--allow-host``. When listening on every interface (``--host 0.0.0.0``), IP literals are accepted too: a
   rebinding attack needs a name, never an address. Anything else gets 421.
2. **Where a browser request comes from** (cross-site request forgery). A state-changing request (POST, PUT,
   PATCH, DELETE) must carry the page's own ``Origin`` (or, without one, ``Referer``); an ``Origin`` of another
   site, or ``null``, gets 403. A request with neither is not from a browser page (curl, scripts) and cannot be
   forged by a web site. ``Sec-Fetch-Site: cross-site`` is refused for everything except opening the page itself,
   so another site cannot embed results or previews either.
3. **Size.** The body is read, up to ``limit`` bytes, before any route sees it: over the limit (declared or
   streamed, chunked included) is 413, never a parser's 400.

Every response carries ``X-Content-Type-Options: nosniff``, a Content-Security-Policy that allows only the page's
own script, style, images (plus the ``data:``/``blob:`` images the preview uses) and connections, and
``frame-ancestors 'none'``, so the page cannot be framed by another site.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def host_name(value: str) -> str:
    """The name in a Host header or URL authority, without port or brackets, lower case: ``[::1]:80`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value[:-1] if value.endswith(".") else value


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The Host names this server answers to (see the module docstring)."""

    def __init__(self, listen_host: str, extra: Iterable[str] = ()) -> None:
        listen = host_name(listen_host) if listen_host not in WILDCARDS else listen_host
        self.names = frozenset(LOOPBACK_NAMES | {host_name(n) for n in extra} | ({listen} - WILDCARDS))
        self.any_ip = listen_host in WILDCARDS

    def __contains__(self, header: str) -> bool:
        name = host_name(header)
        return bool(name) and (name in self.names or (self.any_ip and is_ip(name)))

    def __repr__(self) -> str:
        return ", ".join(sorted(self.names)) + (", any IP address" if self.any_ip else "")


class Guard:
    """The checks of the module docstring, as ASGI middleware around the app."""

    def __init__(self, app: ASGIApp, hosts: AllowedHosts, limit: int) -> None:
        self.app, self.hosts, self.limit = app, hosts, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        refused = self.refusal(scope, headers)
        if refused is not None:
            await _reply(send, *refused)
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _reply(send, 413, self._too_large())
            return
        body, more = await self._read(receive)
        if more:
            await _reply(send, 413, self._too_large())
            return
        await self.app(scope, _replay(body, receive), _with_headers(send))

    def refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, message) for a request refused by who sent it, or None."""
        host = headers.get("host", "")
        if host not in self.hosts:
            return 421, (
                f"this server does not answer to the host name {host_name(host)!r}; open it as http://127.0.0.1 "
                "or start it with --allow-host NAME"
            )
        method, path = scope.get("method", "GET"), scope.get("path", "/")
        fetch_site = headers.get("sec-fetch-site", "")
        navigating = method == "GET" and path == "/" and headers.get("sec-fetch-mode") == "navigate"
        if fetch_site == "cross-site" and not navigating:
            return 403, "requests from other web sites are refused"
        if method in UNSAFE_METHODS:
            sender = headers.get("origin") or headers.get("referer")
            if sender is not None and not self._same_origin(sender, scope, host):
                return 403, f"requests from {sender[:80]!r} are refused: only this server's own page may change things"
        return None

    @staticmethod
    def _same_origin(sender: str, scope: Scope, host: str) -> bool:
        parts = urlsplit(sender)
        scheme = scope.get("scheme", "http")
        return parts.scheme == scheme and parts.netloc.lower() == host.strip().lower()

    def _too_large(self) -> str:
        return f"the request is over this server's limit of {max(1, self.limit >> 20)} MiB"

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        """The whole body, or what was read when it went over the limit and True."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read by the guard, as one message; then the real channel (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_headers(send: Send) -> Send:
    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return secured


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


def json_depth_ok(data: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays and objects at most ``limit`` deep (strings skipped), checked before parsing:
    Python's parser recurses, and ``[`` x 100,000 would end in a RecursionError."""
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True
