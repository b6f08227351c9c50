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
        "soc_src", "soc_trk", "cid", "rss", "from", "amp", "outputtype", "output",
        "src", "ref", "fromrss", "feed", "s_cid", "taid", "__twitter_impression",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "hsa_", "vero_", "oly_")
DEFAULT_PORTS = {"http": 80, "https": 443}
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


def _keep_param(name: str) -> bool:
    low = name.lower()
    return low not in TRACKING_PARAMS and not low.startswith(TRACKING_PREFIXES)


def canonical_url(url: str) -> str:
    """The article's key: ``https://Example.com:443/a/amp/?utm_source=x#c`` → ``https://example.com/a``.

    Raises :class:`InvalidURL` for anything but an absolute http(s) URL with a host.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("empty URL")
    raw = url.strip()
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
    host = _strip_mobile(_host(parts.hostname or ""))
    # The scheme is folded to https: the same article is served on both.
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = quote(unquote(parts.path), safe="/:@!$&'()*+,;=-._~%")
    path = re.sub(r"/{2,}", "/", path)
    path = _AMP_PATH.sub("", path)
    path = re.sub(r"/index\.(?:html?|php)$", "/", path)
    path = path.rstrip("/") or "/"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if _keep_param(k)]
    query.sort()
    return urlunsplit(("https", netloc, path if path != "/" else "", urlencode(query, doseq=True), ""))


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
