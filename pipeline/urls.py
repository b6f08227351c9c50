"""URL canonicalisation: one key for every way the same article is linked.

``canonical_url`` folds scheme and host case, default ports, fragments, tracking
parameters, AMP and mobile variants, trailing slashes and query-parameter order.
It is deliberately conservative about paths (case is kept; many sites route on it).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import idna

TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "igshid", "mc_cid",
        "mc_eid", "_ga", "_gl", "ref_src", "ref_url", "cmpid", "ito", "ocid", "ns_mchannel",
        "ns_source", "ns_campaign", "ns_linkname", "ns_fee", "sr_share", "share", "smid",
        "soc_src", "soc_trk", "rss", "from", "src", "ref", "fromrss", "feed", "s_cid", "taid",
        "__twitter_impression", "at_medium", "at_campaign", "at_custom1", "at_custom2", "at_custom3", "at_custom4",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "vero_", "oly_")
# Parameters that only ask for the AMP rendering ("?amp", "?amp=1", "?outputType=amp").
AMP_FLAG_PARAMS = frozenset({"amp", "outputtype", "output", "render"})
AMP_FLAG_VALUES = frozenset({"", "1", "true", "yes", "amp"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 16_384
# Hosts whose "m." / "amp." / "mobile." prefix serves the same article.
_MOBILE_PREFIX = re.compile(r"^(?:m|mobile|amp|www)\.")
_AMP_PATH = re.compile(r"(?:/amp/?$|/amp(?=/)|\.amp(?=\.html?$|$)|/amp\.html?$)", re.I)


class InvalidURL(ValueError):
    """A URL that cannot be fetched or keyed (bad scheme, no host, garbage)."""


def _host(netloc_host: str) -> str:
    host = netloc_host.strip().rstrip(".").lower()
    if not host:
        raise InvalidURL("URL has no host")
    if host.startswith("[") or re.fullmatch(r"[0-9.]+", host):
        return host
    if ":" in host:  # an IPv6 literal: urlsplit drops its brackets, and without them the key does not parse
        return f"[{host}]"
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        try:
            return host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidURL(f"invalid host name {host!r}") from exc


def _strip_mobile(host: str) -> str:
    # Strip repeatedly: "www.m.example.com" → "example.com"; keep at least two labels.
    while _MOBILE_PREFIX.match(host) and host.count(".") >= 2:
        host = _MOBILE_PREFIX.sub("", host, count=1)
    return host


def _keep_param(name: str, value: str) -> bool:
    low = name.lower()
    if low in AMP_FLAG_PARAMS and value.lower() in AMP_FLAG_VALUES:
        return False
    return low not in TRACKING_PARAMS and not low.startswith(TRACKING_PREFIXES)


# AMP caches and viewers wrap the publisher's URL: https://www-dawn-com.cdn.ampproject.org/c/s/www.dawn.com/news/1
# and https://www.google.com/amp/s/www.dawn.com/news/1 are both https://www.dawn.com/news/1.
_AMP_CACHE_PATH = re.compile(r"^/(?:[cvi]/)?(?:[a-z]/)*?(s/)?([^/]+\.[^/]+)(/.*)?$", re.I)


def _unwrap_amp_cache(host: str, path: str, query: str) -> str | None:
    if host.endswith(".cdn.ampproject.org"):
        m = _AMP_CACHE_PATH.match(path)
    elif host in ("google.com", "www.google.com") and path.startswith("/amp/"):
        m = _AMP_CACHE_PATH.match(path[4:])
    else:
        return None
    if not m:
        return None
    scheme = "https" if m.group(1) else "http"
    return f"{scheme}://{m.group(2)}{m.group(3) or ''}" + (f"?{query}" if query else "")


def canonical_url(url: str) -> str:
    """The article's key: ``https://Example.com:443/a/amp/?utm_source=x#c`` → ``https://example.com/a``.

    Raises :class:`InvalidURL` for anything but an absolute http(s) URL with a host.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("empty URL")
    raw = url.strip()
    if len(raw) > MAX_URL_CHARS:  # no article has one; and normalising costs grow with the length
        raise InvalidURL(f"URL longer than {MAX_URL_CHARS:,} characters")
    if raw.startswith("//"):
        raw = "https:" + raw
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"malformed URL {url[:200]!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL(f"unsupported URL scheme {scheme or '(none)'!r}")
    inner = _unwrap_amp_cache(_host(parts.hostname or ""), parts.path, parts.query)
    if inner is not None:
        return canonical_url(inner)
    host = _strip_mobile(_host(parts.hostname or ""))
    # The scheme is folded to https: the same article is served on both.
    # Either default port: the key is https whatever the scheme was ("http://x:443" is https too).
    netloc = host if port in (None, *DEFAULT_PORTS.values()) else f"{host}:{port}"
    path = quote(unquote(parts.path), safe="/:@!$&'()*+,;=-._~%")
    path = re.sub(r"/{2,}", "/", path)
    # Until nothing changes: removing one suffix can bare another ("/a.amp/index.html",
    # "/index.html/"), and the key of a key must be itself. Each round shortens the path.
    while True:
        before = path
        path = _AMP_PATH.sub("", path)
        path = re.sub(r"/index\.(?:html?|php)$", "/", path.rstrip("/"))
        if path == before:
            break
    path = path.rstrip("/") or "/"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if _keep_param(k, v)]
    query.sort()
    qs = urlencode(query, doseq=True)
    return urlunsplit(("https", netloc, path if path != "/" or qs else "", qs, ""))


def is_fetchable(url: str) -> bool:
    try:
        canonical_url(url)
    except InvalidURL:
        return False
    return True


def site_of(url: str) -> str:
    """The host without www/m. prefixes, for display and outlet matching."""
    try:
        return _strip_mobile(_host(urlsplit(url).hostname or ""))
    except (InvalidURL, ValueError):
        return ""
