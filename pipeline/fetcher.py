"""Polite, bounded HTTP GETs for feeds and article pages.

One :class:`Fetcher` per process (or per stage run) wraps one ``httpx.Client``
and is safe to share between threads. Every request it makes is bounded:

* **SSRF guard.** Only ``http``/``https`` URLs without credentials are fetched.
  Host names are resolved at connect time and the connection is refused when any
  address is loopback, private, link-local, reserved, multicast, unspecified or
  otherwise not globally routable (IPv4-mapped/6to4/Teredo IPv6 forms included),
  unless ``HttpSettings.allow_private_addresses`` is on. Because the check sits
  where the socket is opened, it covers every redirect hop and every pooled
  connection, and a DNS answer cannot change between check and connect.
* **Redirects** are followed here, not by httpx, so each hop is re-checked; the
  chain is capped at ``max_redirects`` and loops are reported as such.
* **Time.** Connect and read timeouts per socket operation, plus a wall-clock
  deadline (``total_timeout``) for one attempt from the first connect to the last
  body byte, enforced inside every socket read, so a server that drips one byte a
  second cannot hold a worker.
* **Size.** The body is streamed and cut at ``max_bytes`` *after* decompression
  (gzip/deflate are decoded here with a bounded output size, so a compression
  bomb costs at most ``max_bytes`` of memory).
* **Concurrency.** At most ``per_host_concurrency`` requests to one host at a time.
* **Retries.** Connection errors, socket timeouts and 5xx answers are retried
  ``retries`` times with exponential backoff and jitter. 429/503 with a
  ``Retry-After`` (seconds or an HTTP date) wait that long when it is at most
  ``max_retry_after``; a longer one raises :class:`HTTPStatusError` carrying
  ``retry_after`` at once so the caller can reschedule instead of sleeping.

Proxy environment variables are ignored on purpose: through a proxy the guard
would check the proxy's address, not the target's.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import random
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from pipeline.config import HttpSettings

log = logging.getLogger(__name__)

__all__ = [
    "BlockedURL",
    "ConnectError",
    "FetchError",
    "FetchTimeout",
    "FetchedResponse",
    "Fetcher",
    "HTTPStatusError",
    "ResponseTooLarge",
    "TooManyRedirects",
    "check_url",
]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
CHUNK = 64 * 1024


# ---------------------------------------------------------------- errors


class FetchError(Exception):
    """A fetch that did not produce a usable response; ``message`` is one clear line."""

    def __init__(self, message: str, url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.url = url


class BlockedURL(FetchError):
    """Refused before connecting: bad scheme, credentials, or a non-public address."""


class ResponseTooLarge(FetchError):
    """The (decompressed) body exceeded the size cap."""


class TooManyRedirects(FetchError):
    """The redirect chain was longer than allowed, or went round in a loop."""


class FetchTimeout(FetchError):
    """Connect, read or whole-response deadline exceeded."""


class ConnectError(FetchError):
    """DNS, TCP, TLS or protocol failure talking to the server."""


class HTTPStatusError(FetchError):
    """The server answered with an error status (after retries)."""

    def __init__(self, message: str, url: str = "", *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message, url)
        self.status = status
        self.retry_after = retry_after


# ---------------------------------------------------------------- response


@dataclass(frozen=True)
class FetchedResponse:
    url: str  # final URL, after redirects
    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes  # decompressed, at most max_bytes
    elapsed: float = 0.0
    history: tuple[str, ...] = field(default=())  # URLs that redirected here, in order

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------- address guard


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    out = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        out.append(ip.teredo[1])
    return out


def blocked_reason(address: str) -> str | None:
    """Why ``address`` (an IP literal) must not be fetched from, or None if it is public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += _embedded_ipv4(ip)
    for a in candidates:
        for attr, label in (
            ("is_loopback", "loopback"),
            ("is_unspecified", "unspecified"),
            ("is_link_local", "link-local"),
            ("is_multicast", "multicast"),
            ("is_private", "private"),
            ("is_reserved", "reserved"),
            ("is_site_local", "site-local"),
        ):
            if getattr(a, attr, False):
                return f"{a} is a {label} address"
        if not a.is_global:
            return f"{a} is not a public address"
    return None


def check_url(url: str) -> httpx.URL:
    """Parse ``url`` and refuse what is never fetched (scheme, credentials, no host)."""
    try:
        u = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise BlockedURL(f"invalid URL {url[:200]!r}: {exc}", url) from exc
    if u.scheme not in ("http", "https"):
        raise BlockedURL(f"refused {u.scheme or 'relative'!s} URL {url[:200]!r}: only http and https are fetched", url)
    if u.userinfo:
        raise BlockedURL(f"refused URL with credentials: {u.copy_with(userinfo=b'')!s}"[:300], url)
    if not u.host:
        raise BlockedURL(f"invalid URL {url[:200]!r}: no host", url)
    return u


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read/write also respects the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, clock: _Deadlines) -> None:
        self._inner = inner
        self._clock = clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clock.bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clock.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        t = self._clock.bound(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, t), self._clock)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Deadlines(threading.local):
    """The wall-clock deadline of the request running on this thread (None: none)."""

    deadline: float | None = None

    def bound(self, timeout: float | None, exc: type[Exception]) -> float | None:
        if self.deadline is None:
            return timeout
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise exc("response deadline exceeded")
        return remaining if timeout is None else min(timeout, remaining)


class _GuardedBackend(httpcore.NetworkBackend):
    """Resolves, vets every address, then connects to a permitted one."""

    def __init__(self, allow_private: bool, clock: _Deadlines) -> None:
        self._inner = httpcore.SyncBackend()
        self._allow_private = allow_private
        self._clock = clock

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve host {host}: {getattr(exc, 'strerror', exc) or exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve host {host}")
        if not self._allow_private:
            # One bad address refuses the host: mixing public and internal answers
            # is how DNS-rebinding attacks slip through.
            for a in addresses:
                reason = blocked_reason(a)
                if reason:
                    shown = host if host == a else f"{host} (resolves to {a})"
                    raise BlockedURL(f"refused {shown}: {reason}")
        last: Exception | None = None
        for a in addresses:
            try:
                t = self._clock.bound(timeout, httpcore.ConnectTimeout)
                stream = self._inner.connect_tcp(a, port, t, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _DeadlineStream(stream, self._clock)
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise BlockedURL("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    # One per process, shared by every Fetcher: building one reads the whole CA bundle
    # (about 16 ms of CPU, twice per Fetcher otherwise), and a context is safe to share between threads.
    return httpx.create_ssl_context(trust_env=False)


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, backend: httpcore.NetworkBackend, limits: httpx.Limits) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False, limits=limits)
        # httpx does not expose the pool's network backend; the pool below is
        # configured exactly as HTTPTransport would, plus the guarded backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


# ---------------------------------------------------------------- bounded decoding


class _BoundedDecoder:
    """Content-Encoding decoding with a hard cap on the output size."""

    def __init__(self, encodings: list[str], cap: int, url: str) -> None:
        self._cap = cap
        self._url = url
        self._stages: list[list[Any]] = []  # [kind, decompressobj|None]
        for enc in reversed(encodings):  # the last encoding applied is undone first
            if enc in ("gzip", "x-gzip"):
                self._stages.append(["gzip", zlib.decompressobj(zlib.MAX_WBITS | 32)])
            elif enc == "deflate":
                self._stages.append(["deflate", None])
            # identity and unknown codings pass through, as httpx does
        self.size = 0

    def _too_large(self) -> ResponseTooLarge:
        return ResponseTooLarge(f"response larger than {self._cap:,} bytes (after decompression)", self._url)

    def _stage(self, stage: list[Any], data: bytes) -> bytes:
        kind, d = stage
        if kind == "deflate" and d is None:
            # "deflate" is zlib-wrapped by the standard, raw deflate by many servers.
            d = stage[1] = zlib.decompressobj()
            try:
                return self._run(stage, d, data)
            except zlib.error:
                d = stage[1] = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._run(stage, d, data)

    def _run(self, stage: list[Any], d: Any, data: bytes) -> bytes:
        out = bytearray()
        while data:
            # max_length bounds memory: a small chunk of a bomb never expands past the cap.
            chunk = d.decompress(data, self._cap + 1 - len(out))
            out += chunk
            if len(out) > self._cap:
                raise self._too_large()
            data = d.unconsumed_tail
            if d.eof:
                rest = d.unused_data
                if stage[0] == "gzip" and rest.strip(b"\x00"):
                    # Concatenated gzip members are one body.
                    d = stage[1] = zlib.decompressobj(zlib.MAX_WBITS | 32)
                    data = rest
                else:
                    break
        return bytes(out)

    def feed(self, data: bytes) -> bytes:
        try:
            for stage in self._stages:
                data = self._stage(stage, data)
        except zlib.error as exc:
            raise FetchError(f"corrupt compressed response: {exc}", self._url) from exc
        self.size += len(data)
        if self.size > self._cap:
            raise self._too_large()
        return data


# ---------------------------------------------------------------- retry-after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


# ---------------------------------------------------------------- fetcher


class _RetryableError(Exception):
    def __init__(self, error: FetchError, wait: float | None = None) -> None:
        self.error = error
        self.wait = wait


class Fetcher:
    """Bounded, polite GETs; thread-safe. Use as a context manager or call :meth:`close`."""

    def __init__(self, http: HttpSettings) -> None:
        self.settings = http
        self._clock = _Deadlines()
        limits = httpx.Limits(
            max_connections=max(http.max_concurrency * 2, 8),
            max_keepalive_connections=max(http.max_concurrency, 4),
            keepalive_expiry=30.0,
        )
        self._guard = _GuardedBackend(http.allow_private_addresses, self._clock)
        transport = _GuardedTransport(self._guard, limits)
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(
                connect=http.connect_timeout,
                read=http.read_timeout,
                write=http.read_timeout,
                pool=http.total_timeout,
            ),
            headers={
                "User-Agent": http.user_agent,
                "Accept-Encoding": "gzip, deflate",
            },
        )
        self._host_lock = threading.Lock()
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}

    # -- lifecycle

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public

    def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        max_bytes: int | None = None,
        accept: str | None = None,
    ) -> FetchedResponse:
        """GET ``url`` within every limit; returns a 2xx or 304 response, else raises :class:`FetchError`.

        ``etag``/``last_modified`` make the request conditional (If-None-Match /
        If-Modified-Since). ``max_bytes`` defaults to ``max_page_bytes``.
        """
        s = self.settings
        cap = s.max_page_bytes if max_bytes is None else max_bytes
        headers = {"Accept": accept or "*/*"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        attempts = max(0, s.retries) + 1
        for attempt in range(attempts):
            try:
                return self._attempt(url, headers, cap)
            except _RetryableError as r:
                last_try = attempt == attempts - 1
                err = r.error
                if isinstance(err, HTTPStatusError) and err.retry_after is not None:
                    if err.retry_after > s.max_retry_after or last_try:
                        raise err from None
                    wait = err.retry_after
                else:
                    if last_try:
                        raise err from None
                    base = min(s.backoff_max, s.backoff_base * (2**attempt))
                    wait = base / 2 + random.uniform(0, base / 2)
                log.info("retrying %s in %.1fs: %s", url, wait, err.message)
                time.sleep(wait)
        raise AssertionError("unreachable")

    # -- internals

    def _slot(self, host: str) -> threading.BoundedSemaphore:
        with self._host_lock:
            sem = self._host_slots.get(host)
            if sem is None:
                sem = self._host_slots[host] = threading.BoundedSemaphore(max(1, self.settings.per_host_concurrency))
            return sem

    def _attempt(self, url: str, headers: dict[str, str], cap: int) -> FetchedResponse:
        s = self.settings
        t0 = time.monotonic()
        deadline = t0 + s.total_timeout
        history: list[str] = []
        seen: set[str] = set()
        current = url
        while True:
            u = check_url(current)
            key = str(u)
            if key in seen:
                raise TooManyRedirects(f"redirect loop: {' → '.join([*history, key])[-400:]}", url)
            seen.add(key)
            status, resp_headers, content = self._hop(u, headers, cap, deadline, url)
            if status in REDIRECT_STATUSES and "location" in resp_headers:
                history.append(key)
                if len(history) > s.max_redirects:
                    raise TooManyRedirects(f"more than {s.max_redirects} redirects (from {url[:200]})", url)
                try:
                    current = str(u.join(resp_headers["location"].strip()))
                except (httpx.InvalidURL, ValueError) as exc:
                    raise ConnectError(f"invalid redirect target {resp_headers['location'][:200]!r}", url) from exc
                continue
            elapsed = time.monotonic() - t0
            if 200 <= status < 300 or status == 304:
                return FetchedResponse(key, status, resp_headers, content, elapsed, tuple(history))
            retry_after = parse_retry_after(resp_headers.get("retry-after")) if status in RETRY_AFTER_STATUSES else None
            phrase = httpx.codes.get_reason_phrase(status)
            msg = f"HTTP {status}{' ' + phrase if phrase else ''}"
            if status in REDIRECT_STATUSES:
                msg += " without a Location header"
            if retry_after is not None:
                msg += f" (Retry-After {retry_after:.0f}s)"
            err = HTTPStatusError(msg, key, status=status, retry_after=retry_after)
            if status in RETRY_STATUSES:
                raise _RetryableError(err)
            raise err

    def _hop(
        self, u: httpx.URL, headers: dict[str, str], cap: int, deadline: float, origin: str
    ) -> tuple[int, httpx.Headers, bytes]:
        """One request/response, no redirects followed; the body is read only for 2xx."""
        sem = self._slot(u.host)
        sem.acquire()
        self._clock.deadline = deadline
        try:
            with self._client.stream("GET", u, headers=headers) as resp:
                if not (200 <= resp.status_code < 300):
                    return resp.status_code, resp.headers, b""
                length = resp.headers.get("content-length", "")
                coding = resp.headers.get("content-encoding", "")
                encodings = [e.strip().lower() for e in coding.split(",") if e.strip()]
                if length.isdigit() and int(length) > cap and not encodings:
                    msg = f"response larger than {cap:,} bytes (Content-Length {int(length):,})"
                    raise ResponseTooLarge(msg, origin)
                decoder = _BoundedDecoder(encodings, cap, origin)
                parts: list[bytes] = []
                raw = 0
                for chunk in resp.iter_raw(CHUNK):
                    raw += len(chunk)
                    if raw > cap:
                        raise ResponseTooLarge(f"response larger than {cap:,} bytes", origin)
                    parts.append(decoder.feed(chunk))
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("response deadline exceeded")
                return resp.status_code, resp.headers, b"".join(parts)
        except FetchError:
            raise
        except httpx.TimeoutException as exc:
            total = self.settings.total_timeout
            if time.monotonic() >= deadline - 0.01:
                # A slow-drip server is not retried: it would only hold a worker longer.
                raise FetchTimeout(f"no complete response within {total:g}s", origin) from exc
            kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
            limit = self.settings.connect_timeout if kind == "connect" else self.settings.read_timeout
            raise _RetryableError(FetchTimeout(f"{kind} timeout after {limit:g}s ({u.host})", origin)) from exc
        except httpx.TransportError as exc:
            raise _RetryableError(ConnectError(_transport_message(exc, u), origin)) from exc
        finally:
            self._clock.deadline = None
            sem.release()


def _transport_message(exc: httpx.TransportError, u: httpx.URL) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        if "cannot resolve" in text:
            return text
        if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
            return f"TLS error with {u.host}: {text}"
        return f"cannot connect to {u.host}:{u.port or (443 if u.scheme == 'https' else 80)}: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"protocol error from {u.host}: {text}"
    return f"connection to {u.host} failed: {text}"

