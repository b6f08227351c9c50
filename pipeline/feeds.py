"""The feed list, OPML, and fetching + parsing feeds into the entry queue.

* :func:`load_feed_list` reads the TOML feed list (``[[feed]]`` tables) or an OPML
  file; :func:`import_opml` / :func:`export_opml` / :func:`export_toml` convert.
* :func:`sync_feeds` brings the list into the store (new URLs added, names,
  countries and tags of known ones updated, nothing deleted or re-enabled).
* :func:`due_feed_ids` picks the feeds whose next fetch time has come.
* :func:`fetch_feeds` fetches feeds concurrently with conditional GETs, parses
  them (:func:`parse_feed`), queues unseen entries as ``entries`` rows (status
  ``pending``, or ``skipped`` when the link is unusable or the entry too old)
  and records each feed's health. One failing feed never fails the batch.

Entries are keyed by (feed, sha256 of the GUID — or of the link when the feed
gives no GUID), enforced by a unique constraint, so passes that run twice or at
the same time never queue an entry twice.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import logging
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import feedparser
from lxml import etree
from lxml import html as lxml_html
from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError

from pipeline.config import Settings
from pipeline.fetcher import FetchError, Fetcher, HTTPStatusError, check_url
from pipeline.store import Entry as EntryRow
from pipeline.store import Feed, Store, chunked, insert_ignore, lock, utcnow
from pipeline.types import Entry, FeedResult, FeedSpec, FetchOutcome, FetchReport
from pipeline.urls import InvalidURL, canonical_url

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
# Dates outside this window are feed errors (placeholder years, clocks set wrong).
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=timezone.utc)
FUTURE_TOLERANCE = timedelta(days=1)
MAX_SUMMARY_CHARS = 20_000
MAX_CONTENT_CHARS = 200_000
MAX_ERROR_CHARS = 500


# ---------------------------------------------------------------- feed list


def spec_from_mapping(d: dict, where: str) -> FeedSpec:
    """A validated :class:`FeedSpec` from a mapping (name, url, country, tags, site_url).

    Raises ``ValueError`` prefixed with ``where`` for a missing or unfetchable URL.
    """
    url = d.get("url") or d.get("xmlUrl")
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{where}: missing url")
    url = url.strip()
    try:
        check_url(url)
    except FetchError as exc:
        raise ValueError(f"{where}: {exc.message}") from None
    tags = d.get("tags", ())
    if isinstance(tags, str):
        tags = [t for t in re.split(r"[,\s]+", tags) if t]
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"{where}: tags must be a list of strings")
    name = d.get("name") or urlsplit(url).hostname or url
    return FeedSpec(
        name=str(name).strip()[:200],
        url=url,
        country=str(d.get("country", "")).strip().upper()[:8],
        tags=tuple(dict.fromkeys(t.strip().lower() for t in tags if t.strip())),
        site_url=str(d.get("site_url", "") or "").strip(),
    )


def _unique(specs: Iterable[FeedSpec]) -> list[FeedSpec]:
    seen: dict[str, FeedSpec] = {}
    for spec in specs:
        if spec.url in seen:
            log.warning("feed %s listed twice; keeping %r", spec.url, seen[spec.url].name)
            continue
        seen[spec.url] = spec
    return list(seen.values())


def load_feed_list(path: Path) -> list[FeedSpec]:
    """Read a feed list: TOML (``[[feed]]`` with name, url, country, tags, site_url) or OPML.

    Raises ``ValueError`` naming the file and the faulty feed; a URL listed twice
    is kept once.
    """
    path = Path(path)
    if path.suffix.lower() in (".opml", ".xml"):
        return import_opml(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    feeds = data.get("feed", [])
    if not isinstance(feeds, list):
        raise ValueError(f"{path}: 'feed' must be an array of tables ([[feed]])")
    specs = []
    for i, d in enumerate(feeds, 1):
        if not isinstance(d, dict):
            raise ValueError(f"{path}: feed #{i} is not a table")
        specs.append(spec_from_mapping(d, f"{path}: feed #{i} ({d.get('name', '?')})"))
    return _unique(specs)


def import_opml(source: Path | str | bytes) -> list[FeedSpec]:
    """Feeds from an OPML document (a path or the bytes), at any nesting depth.

    Parent outlines without a feed URL are folders: their titles become tags, as
    do ``category`` attributes. Outlines without a usable http(s) ``xmlUrl`` are
    skipped. The parser neither expands entities nor touches the network.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True, remove_comments=True
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not an OPML document: {exc}") from exc
    if root is None or not isinstance(root.tag, str) or etree.QName(root).localname.lower() != "opml":
        raise ValueError("not an OPML document (no <opml> root element)")

    def attr(el: etree._Element, *names: str) -> str:
        low = {k.lower(): v for k, v in el.attrib.items() if isinstance(k, str)}
        for n in names:
            v = low.get(n.lower())
            if v and v.strip():
                return v.strip()
        return ""

    specs: list[FeedSpec] = []

    def walk(el: etree._Element, folders: tuple[str, ...]) -> None:
        for child in el:
            if not isinstance(child.tag, str) or etree.QName(child).localname.lower() != "outline":
                continue
            url = attr(child, "xmlUrl", "url")
            title = attr(child, "title", "text")
            if not url:
                walk(child, (*folders, title) if title else folders)
                continue
            cats = [c.strip("/ ").lower() for c in re.split(r"[,]", attr(child, "category")) if c.strip("/ ")]
            tags = [f.lower() for f in folders] + [t for c in cats for t in c.split("/") if t]
            try:
                specs.append(
                    spec_from_mapping(
                        {
                            "url": url,
                            "name": title or url,
                            "country": attr(child, "country"),
                            "tags": [re.sub(r"\s+", "-", t) for t in tags],
                            "site_url": attr(child, "htmlUrl"),
                        },
                        f"outline {title or url!r}",
                    )
                )
            except ValueError as exc:
                log.warning("OPML: skipped %s", exc)
            walk(child, folders)

    for body in root:
        if isinstance(body.tag, str) and etree.QName(body).localname.lower() == "body":
            walk(body, ())
    return _unique(specs)


def export_opml(specs: Iterable[FeedSpec], title: str = "newsmon feeds") -> str:
    """An OPML 2.0 document listing ``specs`` (tags as ``category``, plus ``country``)."""
    opml = etree.Element("opml", version="2.0")
    head = etree.SubElement(opml, "head")
    etree.SubElement(head, "title").text = title
    etree.SubElement(head, "dateCreated").text = utcnow().strftime("%a, %d %b %Y %H:%M:%S GMT")
    body = etree.SubElement(opml, "body")
    for s in specs:
        el = etree.SubElement(body, "outline", type="rss", text=s.name, title=s.name, xmlUrl=s.url)
        if s.site_url:
            el.set("htmlUrl", s.site_url)
        if s.tags:
            el.set("category", ",".join(s.tags))
        if s.country:
            el.set("country", s.country)
    return etree.tostring(opml, pretty_print=True, xml_declaration=True, encoding="UTF-8").decode("utf-8")


def export_toml(specs: Iterable[FeedSpec]) -> str:
    """The feed list format read by :func:`load_feed_list`."""
    q = lambda v: json.dumps(v, ensure_ascii=False)  # noqa: E731  (TOML basic strings accept JSON escapes)
    out = ["# newsmon feed list: one [[feed]] table per feed.\n"]
    for s in specs:
        out.append("\n[[feed]]\n")
        out.append(f"name = {q(s.name)}\nurl = {q(s.url)}\n")
        if s.country:
            out.append(f"country = {q(s.country)}\n")
        if s.tags:
            out.append(f"tags = [{', '.join(q(t) for t in s.tags)}]\n")
        if s.site_url:
            out.append(f"site_url = {q(s.site_url)}\n")
    return "".join(out)


def spec_of(feed: Feed) -> FeedSpec:
    return FeedSpec(
        name=feed.name,
        url=feed.url,
        country=feed.country or "",
        tags=tuple(feed.tags or ()),
        site_url=feed.site_url or "",
    )


# ---------------------------------------------------------------- store: feeds


def sync_feeds(store: Store, specs: list[FeedSpec]) -> int:
    """Add feeds not yet stored (keyed by URL); returns how many were added.

    Known feeds get the list's name, country, tags and site URL. Nothing is
    deleted, and a feed disabled with ``feeds remove`` stays disabled.
    """
    specs = _unique(specs)
    if not specs:
        return 0
    now = utcnow()
    with store.session() as s:
        lock(s, "feeds:sync")
        known = {f.url: f for f in s.scalars(select(Feed).where(Feed.url.in_([sp.url for sp in specs])))}
        rows = [
            {
                "name": sp.name,
                "url": sp.url,
                "country": sp.country,
                "tags": list(sp.tags),
                "site_url": sp.site_url,
                "enabled": True,
                "created_at": now,
                "consecutive_failures": 0,
                "gone": False,
            }
            for sp in specs
            if sp.url not in known
        ]
        result = insert_ignore(s, Feed, rows, "url", returning=Feed.__table__.c.id)
        added = len(result.all()) if result is not None else 0
        for sp in specs:
            f = known.get(sp.url)
            if f is None:
                continue
            if (f.name, f.country, list(f.tags or []), f.site_url) != (sp.name, sp.country, list(sp.tags), sp.site_url):
                f.name, f.country, f.tags, f.site_url = sp.name, sp.country, list(sp.tags), sp.site_url
    return added


def due_feed_ids(store: Store, *, now: datetime, force: bool = False) -> list[int]:
    """Enabled feeds not marked gone whose next fetch time has come (all of them with ``force``).

    Ordered longest-waiting first, so a capped batch serves the most overdue feeds.
    """
    with store.session() as s:
        q = select(Feed.id).where(Feed.enabled.is_(True), Feed.gone.is_(False))
        if not force:
            q = q.where((Feed.next_fetch_at.is_(None)) | (Feed.next_fetch_at <= now))
        q = q.order_by(Feed.next_fetch_at.is_not(None), Feed.next_fetch_at, Feed.id)
        return list(s.scalars(q))


# ---------------------------------------------------------------- parsing


_BLOCK_TAGS = (
    "p", "div", "br", "li", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "tr", "table",
    "section", "article", "header", "footer", "figure", "figcaption", "pre", "hr", "dd", "dt",
)  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


def clean_str(value: object, limit: int | None = None) -> str:
    """A string safe for any store: no NUL/control characters or lone surrogates, trimmed."""
    if value is None:
        return ""
    s = _CONTROL.sub("", str(value)).strip()
    return s[:limit] if limit else s


def html_to_text(value: str) -> str:
    """Plain text from an HTML fragment: block elements become line breaks, entities decoded."""
    if not value:
        return ""
    if "<" not in value and "&" not in value:
        text = value
    else:
        try:
            root = lxml_html.fragment_fromstring(value, create_parent="div")
        except (etree.ParserError, ValueError, TypeError):
            text = re.sub(r"<[^>]*>", " ", value)
        else:
            for el in list(root.iter("script", "style", "noscript", "iframe", "object")):
                el.drop_tree()
            for el in root.iter(*_BLOCK_TAGS):
                el.tail = "\n" + (el.tail or "")
            text = root.text_content()
    lines = (_SPACES.sub(" ", ln).strip() for ln in clean_str(text).split("\n"))
    return "\n".join(ln for ln in lines if ln)


def _detail_text(value: str, detail: dict | None) -> str:
    kind = (detail or {}).get("type", "text/html")
    if kind == "text/plain":
        return "\n".join(ln for ln in (_SPACES.sub(" ", x).strip() for x in clean_str(value).split("\n")) if ln)
    return html_to_text(value)


def _when(parsed: time.struct_time | None, now: datetime) -> datetime | None:
    if not parsed:
        return None
    try:
        when = datetime.fromtimestamp(calendar.timegm(parsed), tz=timezone.utc)
    except (OverflowError, ValueError, TypeError, OSError):
        return None
    if when < EARLIEST_DATE or when > now + FUTURE_TOLERANCE:
        return None
    return when


@dataclass(frozen=True)
class ParsedFeed:
    entries: tuple[Entry, ...]
    bozo: str | None
    version: str
    title: str = ""


def _one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()[:limit]


def _bozo_message(exc: BaseException | None) -> str:
    if exc is None:
        return "malformed feed"
    msg = _one_line(getattr(exc, "getMessage", lambda: str(exc))() or str(exc))
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _entry(e: dict, base: str, now: datetime) -> Entry | None:
    link = e.get("link") or ""
    if not link:
        for ln in e.get("links", ()) or ():
            if ln.get("href") and ln.get("rel", "alternate") == "alternate":
                link = ln["href"]
                break
    link = clean_str(link)
    if link:
        try:
            link = urljoin(base, link)
        except ValueError:
            pass
    guid = clean_str(e.get("id") or e.get("guid") or "") or link
    title = _detail_text(e.get("title", ""), e.get("title_detail"))
    summary = _detail_text(e.get("summary", ""), e.get("summary_detail"))[:MAX_SUMMARY_CHARS]
    content = ""
    for c in e.get("content", ()) or ():
        text = _detail_text(c.get("value", ""), c)
        if len(text) > len(content):
            content = text
    content = content[:MAX_CONTENT_CHARS]
    if summary and content == summary:
        content = ""
    if not guid:
        # No GUID and no link: key on what the entry says, so it is not queued again.
        basis = "\n".join((title, summary, content)).strip()
        if not basis:
            return None
        guid = "sha256:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()
    author = (e.get("author_detail") or {}).get("name") or e.get("author") or ""
    published = _when(e.get("published_parsed"), now) or _when(e.get("updated_parsed"), now) or _when(
        e.get("created_parsed"), now
    )
    return Entry(
        guid=guid,
        link=link,
        title=title,
        summary=summary,
        content=content,
        author=clean_str(html_to_text(author), 512),
        published=published,
    )


# feedparser's lenient parser expands a DTD-declared entity at every reference with
# no limit, so a few hundred kilobytes of "&a;&a;..." naming one long entity become
# gigabytes (the "quadratic blowup"). When the declared entities of a feed would
# expand past this many characters, its declarations are dropped before parsing.
MAX_ENTITY_EXPANSION = 1 << 20
MAX_ENTITY_DECLS = 64
_ENTITY_DECL = re.compile(rb"<!ENTITY\b[^>]*>?")
# Name and quoted value; wider than what feedparser accepts, so the estimate is an upper bound.
_ENTITY_VALUE = re.compile(rb"<!ENTITY\s+([^\s%>]+)\s+(?:\"([^\"]*)\"|'([^']*)')")
_FIRST_ELEMENT = re.compile(rb"<\w")  # how feedparser finds the end of the prolog
_WIDE_ENTITY_DECLS = tuple("<!ENTITY".encode(c) for c in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


def _defuse_entities(content: bytes) -> bytes:
    """``content``, without its entity declarations when they would expand past
    :data:`MAX_ENTITY_EXPANSION` characters (references then stay as written).

    Raises ``ValueError`` for a UTF-16/32 document that declares entities (its
    prolog cannot be read byte-wise; no real feed does this).
    """
    m = _FIRST_ELEMENT.search(content)
    end = m.start() if m else len(content)
    head = content[:end]
    if b"<!ENTITY" in head:
        decls = _ENTITY_VALUE.findall(head)
        # Many declarations are not counted one by one (each count reads the whole feed).
        if len(decls) > MAX_ENTITY_DECLS or sum(
            len(v1 or v2) * content.count(b"&" + name + b";") for name, v1, v2 in decls
        ) > MAX_ENTITY_EXPANSION:
            head = _ENTITY_DECL.sub(b"", head)
            if b"<!ENTITY" in head:  # halves joined into a new declaration: built to get through
                raise ValueError("the feed's entity declarations are malformed; refused")
            content = head + content[end:]
    if b"\x00" in content[:4096] and any(d in content for d in _WIDE_ENTITY_DECLS):
        raise ValueError("the feed declares XML entities in a UTF-16/UTF-32 document; refused")
    return content


def run_feedparser(content: bytes, headers: dict | None, url: str) -> tuple[feedparser.FeedParserDict, str]:
    """feedparser's raw result for fetched bytes, and the base URL used for relative links.

    Entity declarations that would expand too far are dropped first (see :func:`_defuse_entities`).
    """
    content = _defuse_entities(content)
    given = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
    # Only the headers that describe the document: the body is already decoded.
    hdrs = {k: given[k] for k in ("content-type", "content-language") if given.get(k)}
    # No declared type: let the XML declaration and BOM decide, without a complaint.
    hdrs.setdefault("content-type", "application/xml")
    # Relative links resolve against the server's Content-Location, else the feed URL.
    try:
        base = urljoin(url, given["content-location"].strip()) if given.get("content-location") else url
    except ValueError:
        base = url
    hdrs["content-location"] = base
    # A stream, never a str/bytes "source": feedparser would treat those as a
    # path or URL to open.
    return feedparser.parse(io.BytesIO(content), response_headers=hdrs), base


def parse_feed_full(content: bytes, headers: dict | None, url: str, *, max_entries: int | None = None) -> ParsedFeed:
    """Like :func:`parse_feed`, also returning the detected format version and the feed title."""
    result, base = run_feedparser(content, headers, url)
    now = utcnow()
    entries: list[Entry] = []
    for e in result.get("entries", ()):
        try:
            entry = _entry(e, base, now)
        except Exception as exc:  # one odd entry must not lose the rest of the feed
            log.debug("skipped an entry of %s: %s", url, exc)
            continue
        if entry is not None:
            entries.append(entry)
    # Newest first; undated entries keep their feed order after the dated ones.
    floor = datetime.min.replace(tzinfo=timezone.utc)
    entries.sort(key=lambda en: en.published or floor, reverse=True)
    if max_entries is not None:
        entries = entries[: max(0, max_entries)]
    bozo = _bozo_message(result.get("bozo_exception")) if result.get("bozo") else None
    title = clean_str((result.get("feed") or {}).get("title", ""), 300)
    return ParsedFeed(tuple(entries), bozo, result.get("version") or "", title)


def parse_feed(content: bytes, headers: dict | None, url: str) -> tuple[list[Entry], str | None]:
    """Parse fetched feed bytes with feedparser: (entries newest first, bozo complaint or None).

    ``headers`` are the HTTP response headers (a declared charset and
    Content-Location are honoured). Entries are normalised: GUID falls back to the
    link, links are absolute, dates are aware UTC (future beyond a day or before
    1990 → unknown), summary and content are plain text.
    """
    parsed = parse_feed_full(content, headers, url)
    return list(parsed.entries), parsed.bozo


# ---------------------------------------------------------------- fetching


def fetch_feed(
    fetcher: Fetcher, settings: Settings, url: str, *, etag: str | None = None, last_modified: str | None = None
) -> FeedResult:
    """Fetch and parse one feed; never raises for network or feed problems (see ``outcome``)."""
    t0 = time.monotonic()
    try:
        resp = fetcher.get(
            url, etag=etag, last_modified=last_modified, max_bytes=settings.http.max_feed_bytes, accept=FEED_ACCEPT
        )
    except HTTPStatusError as exc:
        outcome = FetchOutcome.GONE if exc.status == 410 else FetchOutcome.FAILED
        return FeedResult(
            url, outcome, status=exc.status, error=exc.message, retry_after=exc.retry_after,
            elapsed=time.monotonic() - t0,
        )  # fmt: skip
    except FetchError as exc:
        return FeedResult(url, FetchOutcome.FAILED, error=exc.message, elapsed=time.monotonic() - t0)
    new_etag = clean_str(resp.headers.get("etag")) or None
    new_modified = clean_str(resp.headers.get("last-modified")) or None
    if resp.not_modified:
        return FeedResult(
            url, FetchOutcome.NOT_MODIFIED, status=304, etag=new_etag or etag,
            last_modified=new_modified or last_modified, elapsed=time.monotonic() - t0,
        )  # fmt: skip
    try:
        parsed = parse_feed_full(
            resp.content, dict(resp.headers), resp.url, max_entries=settings.ingest.max_entries_per_feed
        )
    except Exception as exc:  # feedparser is robust, but a feed must never take the batch down
        return FeedResult(
            url, FetchOutcome.FAILED, status=resp.status, error=f"cannot parse feed: {type(exc).__name__}: {exc}",
            elapsed=time.monotonic() - t0,
        )  # fmt: skip
    if not parsed.entries and not parsed.version:
        if not resp.content.strip():
            error = "empty response"
        else:
            kind = resp.content_type or "unknown type"
            error = f"not an RSS/Atom feed ({kind})" + (f": {parsed.bozo}" if parsed.bozo else "")
        return FeedResult(
            url, FetchOutcome.FAILED, status=resp.status, error=_one_line(error), bozo=parsed.bozo,
            elapsed=time.monotonic() - t0,
        )  # fmt: skip
    return FeedResult(
        url, FetchOutcome.OK, status=resp.status, entries=parsed.entries, etag=new_etag,
        last_modified=new_modified, bozo=parsed.bozo, elapsed=time.monotonic() - t0,
    )  # fmt: skip


@dataclass(frozen=True)
class _FeedState:
    id: int
    name: str
    url: str
    etag: str | None
    last_modified: str | None


def _load_states(store: Store, feed_ids: Iterable[int]) -> list[_FeedState]:
    ids = list(dict.fromkeys(feed_ids))
    states: list[_FeedState] = []
    with store.session() as s:
        for chunk in chunked(ids):
            for f in s.scalars(select(Feed).where(Feed.id.in_(chunk))):
                states.append(_FeedState(f.id, f.name, f.url, f.etag, f.last_modified))
    order = {fid: n for n, fid in enumerate(ids)}
    states.sort(key=lambda st: order[st.id])
    return states


def iter_fetch_results(
    store: Store, settings: Settings, feed_ids: list[int]
) -> Iterator[tuple[int, FeedResult]]:
    """Fetch ``feed_ids`` concurrently; yields (feed id, result) as each finishes. Stores nothing."""
    yield from _fetch_states(settings, _load_states(store, feed_ids))


def _fetch_states(settings: Settings, states: list[_FeedState]) -> Iterator[tuple[int, FeedResult]]:
    if not states:
        return
    workers = max(1, min(settings.http.max_concurrency, len(states)))
    with Fetcher(settings.http) as fetcher:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="newsmon-feed")
        try:
            futures: dict[Future[FeedResult], _FeedState] = {
                pool.submit(fetch_feed, fetcher, settings, st.url, etag=st.etag, last_modified=st.last_modified): st
                for st in states
            }
            for fut in as_completed(futures):
                st = futures[fut]
                try:
                    result = fut.result()
                except Exception as exc:
                    log.exception("fetching %s failed unexpectedly", st.url)
                    error = f"unexpected error: {type(exc).__name__}: {exc}"
                    result = FeedResult(st.url, FetchOutcome.FAILED, error=error)
                yield st.id, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _guid_key(guid: str) -> str:
    return hashlib.sha256(guid.encode("utf-8", "surrogatepass")).hexdigest()


def _entry_rows(
    settings: Settings, feed_id: int, entries: Iterable[Entry], now: datetime, run_id: int | None
) -> list[dict]:
    oldest = now - timedelta(days=settings.ingest.max_entry_age_days)
    rows: dict[str, dict] = {}
    for e in entries:
        key = _guid_key(e.guid)
        if key in rows:  # feeds that repeat a GUID: the first (newest) wins
            continue
        status, error, canonical = "pending", None, ""
        try:
            canonical = canonical_url(e.link)
            if len(canonical) > 2048:
                raise InvalidURL("link longer than 2048 characters")
            # The key drops credentials, but the fetcher refuses the link (and the
            # article would carry them): such an entry is not queued.
            check_url(e.link)
        except InvalidURL as exc:
            canonical, status, error = "", "skipped", f"no usable link: {exc}"
        except FetchError as exc:
            canonical, status, error = "", "skipped", f"no usable link: {exc.message}"
        if status == "pending" and e.published is not None and e.published < oldest:
            status, error = "skipped", f"older than {settings.ingest.max_entry_age_days} days"
        rows[key] = {
            "feed_id": feed_id,
            "guid_key": key,
            "guid": e.guid,
            "link": e.link,
            "canonical_link": canonical,
            "title": e.title,
            "summary": e.summary,
            "content": e.content,
            "author": e.author[:512],
            "published_at": e.published,
            "discovered_at": now,
            "status": status,
            "attempts": 0,
            "error": error,
            "run_id": run_id,
        }
    return list(rows.values())


def next_fetch_time(settings: Settings, now: datetime, failures: int, retry_after: float | None = None) -> datetime:
    """Healthy: one interval. Failing: 2^failures intervals, capped. Retry-After is a floor."""
    interval = timedelta(minutes=settings.ingest.feed_interval_minutes)
    cap = timedelta(hours=settings.ingest.max_backoff_hours)
    delay = interval if failures <= 0 else min(interval * (2 ** min(failures, 30)), cap)
    if retry_after:
        delay = max(delay, min(timedelta(seconds=retry_after), cap))
    return now + delay


@dataclass(frozen=True)
class RecordedResult:
    new_entry_ids: tuple[int, ...] = ()  # queued as pending
    new: int = 0  # all new rows, skipped ones included
    known: int = 0
    seen: int = 0


def record_result(
    store: Store,
    settings: Settings,
    feed_id: int,
    result: FeedResult,
    *,
    run_id: int | None = None,
    now: datetime | None = None,
) -> RecordedResult:
    """Store one feed's result in one transaction: new entries queued, feed health updated."""
    now = now or utcnow()
    try:
        return _record(store, settings, feed_id, result, run_id, now)
    except (DataError, IntegrityError) as exc:
        # A row the database refuses (should not happen) fails this feed, not the batch.
        log.exception("storing entries of feed %s failed", feed_id)
        failed = FeedResult(
            result.feed_url, FetchOutcome.FAILED, status=result.status,
            error=_one_line(f"cannot store entries: {type(exc).__name__}: {exc.orig}"),
        )  # fmt: skip
        return _record(store, settings, feed_id, failed, run_id, now)


def _record(
    store: Store, settings: Settings, feed_id: int, result: FeedResult, run_id: int | None, now: datetime
) -> RecordedResult:
    with store.session() as s:
        # Serialises concurrent passes over the same feed, so "new" is exact.
        lock(s, f"feed:{feed_id}")
        feed = s.get(Feed, feed_id)
        if feed is None:
            return RecordedResult()
        feed.last_fetch_at = now
        feed.last_status = result.status
        feed.last_outcome = result.outcome.value
        recorded = RecordedResult()
        if result.outcome in (FetchOutcome.OK, FetchOutcome.NOT_MODIFIED):
            feed.last_success_at = now
            feed.consecutive_failures = 0
            feed.next_fetch_at = next_fetch_time(settings, now, 0, result.retry_after)
            feed.last_error = None
            feed.gone = False
            feed.etag = result.etag if result.etag and len(result.etag) <= 512 else None
            feed.last_modified = (
                result.last_modified if result.last_modified and len(result.last_modified) <= 128 else None
            )
        if result.outcome is FetchOutcome.OK:
            feed.last_bozo = _one_line(result.bozo) if result.bozo else None
            rows = _entry_rows(settings, feed_id, result.entries, now, run_id)
            keys = [r["guid_key"] for r in rows]
            existing: set[str] = set()
            for chunk in chunked(keys):
                q = select(EntryRow.guid_key).where(EntryRow.feed_id == feed_id, EntryRow.guid_key.in_(chunk))
                existing.update(s.scalars(q))
            new_rows = [r for r in rows if r["guid_key"] not in existing]
            insert_ignore(s, EntryRow, new_rows, "feed_id", "guid_key")
            pending_keys = [r["guid_key"] for r in new_rows if r["status"] == "pending"]
            ids: list[int] = []
            for chunk in chunked(pending_keys):
                q = select(EntryRow.id).where(EntryRow.feed_id == feed_id, EntryRow.guid_key.in_(chunk))
                ids.extend(s.scalars(q))
            if new_rows:
                feed.last_new_entry_at = now
            recorded = RecordedResult(tuple(sorted(ids)), len(new_rows), len(rows) - len(new_rows), len(rows))
        elif result.outcome in (FetchOutcome.FAILED, FetchOutcome.GONE):
            feed.consecutive_failures = (feed.consecutive_failures or 0) + 1
            feed.last_error = _one_line(result.error or "failed")
            if result.outcome is FetchOutcome.GONE:
                feed.gone = True
            feed.next_fetch_at = next_fetch_time(settings, now, feed.consecutive_failures, result.retry_after)
        return recorded


def fetch_feeds(
    store: Store,
    settings: Settings,
    feed_ids: list[int],
    *,
    run_id: int | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> FetchReport:
    """Fetch and parse the feeds; queue new entries (status pending); record each feed's health.

    Feeds are fetched concurrently (``http.max_concurrency`` workers; the fetcher
    limits requests per host) and each result is stored in its own transaction as
    it arrives, so an interrupted batch keeps what it finished. Only a failure of
    the store itself raises. Setting ``cancel`` stops the batch after the feeds
    being fetched (the others stay due).
    """
    report = FetchReport()
    states = {st.id: st for st in _load_states(store, feed_ids)}
    missing = [i for i in dict.fromkeys(feed_ids) if i not in states]
    if missing:
        report.errors.append(f"unknown feed ids: {', '.join(map(str, missing[:20]))}")
    report.feeds_total = len(states)
    if progress:
        progress("fetch", 0, report.feeds_total)
    with closing(_fetch_states(settings, list(states.values()))) as results:
        for feed_id, result in results:
            if cancel is not None and cancel.is_set():
                report.errors.append("feed fetching stopped before the end of the batch")
                break
            _tally(report, states[feed_id], result, record_result(store, settings, feed_id, result, run_id=run_id))
            if progress:
                progress("fetch", report.feeds_ok + report.feeds_not_modified + report.feeds_failed, report.feeds_total)
    report.entry_ids.sort()
    return report


def _tally(report: FetchReport, st: _FeedState, result: FeedResult, rec: RecordedResult) -> None:
    if result.outcome is FetchOutcome.OK:
        report.feeds_ok += 1
    elif result.outcome is FetchOutcome.NOT_MODIFIED:
        report.feeds_not_modified += 1
    else:
        report.feeds_failed += 1
        report.failed_feeds.append(f"{st.name} <{st.url}>")
        report.errors.append(f"feed {st.name}: {result.error or result.outcome.value}")
    report.entries_seen += rec.seen
    report.entries_new += rec.new
    report.entries_known += rec.known
    report.entry_ids.extend(rec.new_entry_ids)
    log.info(
        "feed %s: %s%s, %d entries, %d new",
        st.url, result.outcome.value, f" ({result.error})" if result.error else "", rec.seen, rec.new,
    )  # fmt: skip
