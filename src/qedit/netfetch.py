"""SSRF-safe outbound HTTP: image and LoRA downloads, webhook deliveries.

A URL given by a client must not make the server talk to itself or to its private network. Checking
the host name is not enough (DNS can point anywhere, and change between check and use), so the
check happens where the socket is opened: the connection backend resolves the name, refuses
loopback/private/link-local/reserved addresses, and connects to the very address it checked. TLS
still verifies the certificate against the original host name. Redirects are followed by hand, each
hop re-checked. Downloads are capped while streaming, and bounded in time.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from qedit.errors import InvalidInput

MAX_URL_CHARS = 2048
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class UrlPolicy:
    allow_private: bool = False
    allow_http: bool = False

    @property
    def schemes(self) -> tuple[str, ...]:
        return ("https", "http") if self.allow_http else ("https",)


class BlockedAddress(Exception):
    """The URL's host resolves to an address this server may not contact."""


_DEADLINE: ContextVar[float | None] = ContextVar("qedit_fetch_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Every socket operation of guarded clients in this block ends by ``seconds`` from now.

    httpx's timeouts are per operation: a peer that trickles one header byte every few seconds, or
    answers with redirect after slow redirect, never trips them. This bound covers the whole fetch:
    connect, TLS, every header and body read, every redirect hop. Nested blocks keep the earlier end.
    """
    end = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(end if outer is None else min(outer, end))
    try:
        yield end
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, exc: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of the current deadline; past it, ``exc``."""
    end = _DEADLINE.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise exc("the whole request took longer than its time limit")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake is cut to the deadline's time left."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo).

    Each can route to the IPv4 host it names (through the kernel, a NAT64 gateway or a relay), so
    ``::ffff:127.0.0.1`` or ``64:ff9b::7f00:1`` must be judged as 127.0.0.1.
    """
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: UrlPolicy) -> bool:
    if policy.allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner:
            return all(v4.is_global and not v4.is_multicast for v4 in inner)
    return ip.is_global and not ip.is_multicast


def check_url(url: str, policy: UrlPolicy, field: str) -> httpx.URL:
    """Syntax and scheme; literal IP hosts are checked here too (names are checked at connect)."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"URL is {len(url)} characters, at most {MAX_URL_CHARS} allowed", field=field)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as e:
        raise InvalidInput(f"not a valid URL: {url[:200]!r} ({e})", field=field) from None
    if parsed.scheme not in policy.schemes:
        allowed = " or ".join(policy.schemes)
        raise InvalidInput(
            f"URL scheme must be {allowed}, got {parsed.scheme or 'none'!r} in {url[:200]!r}", field=field
        )
    if not parsed.host:
        raise InvalidInput(f"URL has no host: {url[:200]!r}", field=field)
    if parsed.userinfo:
        raise InvalidInput("URL must not carry credentials", field=field)
    try:
        ip = ipaddress.ip_address(parsed.host)
    except ValueError:
        ip = None
    if ip is not None and not address_allowed(ip, policy):
        raise InvalidInput(
            f"URL host {parsed.host} is a loopback/private/link-local address, which is refused", field=field
        )
    if not ip and parsed.host.lower() in ("localhost", "localhost.localdomain") and not policy.allow_private:
        raise InvalidInput(f"URL host {parsed.host} is this machine, which is refused", field=field)
    return parsed


RESOLVE_TIMEOUT = 5.0
_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="qedit-resolve")


def check_resolved(url: httpx.URL, policy: UrlPolicy, field: str, timeout: float = RESOLVE_TIMEOUT) -> None:
    """Resolve the URL's host now and refuse it if any address is one the policy forbids.

    For URLs kept to be used later (webhooks): a name or numeric form of an internal address
    (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``localhost.``, a hosts-file name) is
    refused when it is given, not only when it is called. The connect-time check still decides
    (DNS may change); a name that does not resolve now is refused too, saying so.
    """
    if policy.allow_private:
        return
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    job = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = job.result(timeout)
    except FutureTimeout:
        raise InvalidInput(f"URL host {host} did not resolve within {timeout:g} s", field=field) from None
    except (OSError, UnicodeError) as e:
        raise InvalidInput(f"URL host {host} does not resolve ({e})", field=field) from None
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if not address_allowed(ip, policy):
            raise InvalidInput(
                f"URL host {host} is {ip}, a loopback/private/link-local address, which is refused", field=field
            )


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, but every TCP connect goes to a vetted address only."""

    def __init__(self, policy: UrlPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        _bounded(timeout, httpcore.ConnectTimeout)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e
        allowed = []
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if address_allowed(ip, self.policy):
                allowed.append(str(ip))
        if not allowed:
            raise BlockedAddress(f"{host} resolves to a loopback/private/link-local address, which is refused")
        last: Exception | None = None
        for ip in dict.fromkeys(allowed):
            try:
                stream = self._inner.connect_tcp(
                    ip, port, _bounded(timeout, httpcore.ConnectTimeout), local_address, socket_options
                )
                return _DeadlineStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        assert last is not None
        raise last

    def connect_unix_socket(self, *args: object, **kwargs: object) -> httpcore.NetworkStream:
        raise BlockedAddress("unix sockets are refused")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(), max_connections=10, network_backend=GuardedBackend(policy)
        )


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return ssl.create_default_context()


def guarded_client(policy: UrlPolicy, timeout: float) -> httpx.Client:
    """An httpx client that can reach only addresses the policy allows (no env proxies either)."""
    return httpx.Client(
        transport=GuardedTransport(policy),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": "qedit"},
    )


@contextmanager
def open_url(url: str, *, policy: UrlPolicy, timeout: float, field: str) -> Iterator[httpx.Response]:
    """A GET's 200 response, streaming: every redirect hop checked, errors as ``InvalidInput``.

    The caller reads the body (``iter_bytes``) within the ``with``; network failures while it reads
    are turned into ``InvalidInput`` naming ``field`` too. ``timeout`` bounds the whole fetch, every
    hop and the body included (``deadline``).
    """
    current = url
    with deadline(timeout), guarded_client(policy, timeout) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(current, policy, field)
            try:
                with client.stream("GET", current) as r:
                    if r.is_redirect:
                        location = r.headers.get("location")
                        if not location:
                            raise InvalidInput(f"{current[:200]} redirected without a Location", field=field)
                        current = urljoin(current, location)
                        continue
                    if r.status_code != 200:
                        raise InvalidInput(f"fetching {current[:200]} answered HTTP {r.status_code}", field=field)
                    yield r
                    return
            except BlockedAddress as e:
                raise InvalidInput(f"{e} ({current[:200]})", field=field) from None
            except httpx.TimeoutException:
                raise InvalidInput(f"fetching {current[:200]} took more than {timeout:g} s", field=field) from None
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as e:  # the last two are not HTTPErrors
                raise InvalidInput(f"fetching {current[:200]} failed: {e}", field=field) from None
    raise InvalidInput(f"more than {MAX_REDIRECTS} redirects from {url[:200]}", field=field)


def stream_capped(
    r: httpx.Response, *, max_bytes: int, deadline: float, timeout: float, field: str, what: str = "file"
) -> Iterator[bytes]:
    """The body's chunks; more than ``max_bytes`` or past ``deadline`` is an error naming ``field``."""
    declared = r.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InvalidInput(f"{what} is {int(declared)} bytes, at most {max_bytes} allowed", field=field)
    size = 0
    for chunk in r.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise InvalidInput(f"{what} is more than {max_bytes} bytes, at most {max_bytes} allowed", field=field)
        if time.monotonic() > deadline:
            raise InvalidInput(f"fetching {str(r.url)[:200]} took more than {timeout:g} s", field=field)
        yield chunk


def fetch_bytes(url: str, *, policy: UrlPolicy, max_bytes: int, timeout: float, field: str) -> bytes:
    """GET an image: every hop checked, at most ``max_bytes`` read, ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    with open_url(url, policy=policy, timeout=timeout, field=field) as r:
        return b"".join(
            stream_capped(r, max_bytes=max_bytes, deadline=deadline, timeout=timeout, field=field, what="image")
        )
