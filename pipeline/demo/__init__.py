"""The offline demo: bundled sample feeds and article pages served from loopback.

``start(settings)`` serves three fictional outlets (RSS 2.0 and Atom feeds, article
pages with real-world noise) on ``127.0.0.1:<settings.demo_port>`` and returns the
feed list to ingest. Feeds and pages answer conditional requests (ETag and
Last-Modified) like a well-behaved news site, so a second pass gets 304s.
If a demo server is already listening on the port (another process or task of the
same run), it is reused.
"""

from __future__ import annotations

import hashlib
import threading
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape

from pipeline.config import Settings
from pipeline.types import FeedSpec

HERE = Path(__file__).resolve().parent
SIGNATURE_PATH = "/__newsmon_demo__"


@dataclass(frozen=True)
class DemoArticle:
    slug: str
    outlet: str
    published: datetime
    author: str
    title: str
    dek: str
    caption: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class Outlet:
    key: str
    name: str
    country: str
    feed: str  # "rss" | "atom"
    path: str


@dataclass
class DemoSite:
    """The rendered site: path → (content type, body, last modified)."""

    base_url: str
    outlets: list[Outlet]
    articles: list[DemoArticle]
    routes: dict[str, tuple[str, bytes, datetime]] = field(default_factory=dict)

    @property
    def feeds(self) -> list[FeedSpec]:
        return [
            FeedSpec(
                name=o.name,
                url=f"{self.base_url}{o.path}/feed.xml",
                country=o.country,
                tags=("demo",),
                site_url=f"{self.base_url}{o.path}/",
            )
            for o in self.outlets
        ]

    def article_url(self, a: DemoArticle) -> str:
        outlet = next(o for o in self.outlets if o.key == a.outlet)
        return f"{self.base_url}{outlet.path}/news/{a.slug}"


def load_site(base_url: str) -> DemoSite:
    data = tomllib.loads((HERE / "articles.toml").read_text(encoding="utf-8"))
    outlets = [Outlet(**o) for o in data["outlet"]]
    articles = [
        DemoArticle(
            slug=a["slug"],
            outlet=a["outlet"],
            published=datetime.fromisoformat(a["published"].replace("Z", "+00:00")),
            author=a["author"],
            title=a["title"],
            dek=a.get("dek", ""),
            caption=a.get("caption", ""),
            paragraphs=tuple(a["paragraphs"]),
        )
        for a in data["article"]
    ]
    site = DemoSite(base_url=base_url.rstrip("/"), outlets=outlets, articles=articles)
    _render(site)
    return site


def _render(site: DemoSite) -> None:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2"]))
    for outlet in site.outlets:
        mine = sorted((a for a in site.articles if a.outlet == outlet.key), key=lambda a: a.published, reverse=True)
        for a in mine:
            view = {
                "title": a.title,
                "dek": a.dek,
                "caption": a.caption,
                "author": a.author,
                "paragraphs": a.paragraphs,
                "url": site.article_url(a),
                "published": a.published.isoformat().replace("+00:00", "Z"),
                "published_human": a.published.strftime("%d %b %Y, %I:%M %p"),
            }
            html = env.get_template(f"{outlet.key}.html.j2").render(
                a=view, outlet=outlet, page_date=a.published.strftime("%A %B %d, %Y")
            )
            site.routes[f"{outlet.path}/news/{a.slug}"] = ("text/html; charset=utf-8", html.encode(), a.published)
        newest = mine[0].published if mine else datetime(2020, 1, 1, tzinfo=timezone.utc)
        body = _atom(site, outlet, mine) if outlet.feed == "atom" else _rss(site, outlet, mine)
        ctype = "application/atom+xml" if outlet.feed == "atom" else "application/rss+xml"
        site.routes[f"{outlet.path}/feed.xml"] = (f"{ctype}; charset=utf-8", body.encode(), newest)


def _summary(a: DemoArticle) -> str:
    return a.dek or a.paragraphs[0]


def _rss(site: DemoSite, outlet: Outlet, articles: list[DemoArticle]) -> str:
    items = "".join(
        f"""
    <item>
      <title>{escape(a.title)}</title>
      <link>{escape(site.article_url(a))}?utm_source=rss&amp;utm_medium=feed</link>
      <guid isPermaLink="false">{outlet.key}-{a.slug}</guid>
      <pubDate>{format_datetime(a.published, usegmt=True)}</pubDate>
      <dc:creator>{escape(a.author)}</dc:creator>
      <description>{escape(_summary(a))}</description>
    </item>"""
        for a in articles
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel>
    <title>{escape(outlet.name)}</title>
    <link>{site.base_url}{outlet.path}/</link>
    <description>Latest news from {escape(outlet.name)}</description>
    <language>en</language>{items}
  </channel>
</rss>
"""


def _atom(site: DemoSite, outlet: Outlet, articles: list[DemoArticle]) -> str:
    updated = articles[0].published.isoformat() if articles else "2020-01-01T00:00:00+00:00"
    entries = "".join(
        f"""
  <entry>
    <title>{escape(a.title)}</title>
    <link rel="alternate" href="{escape(site.article_url(a))}"/>
    <id>tag:{outlet.key}.example,2024:{a.slug}</id>
    <published>{a.published.isoformat()}</published>
    <updated>{a.published.isoformat()}</updated>
    <author><name>{escape(a.author)}</name></author>
    <summary>{escape(_summary(a))}</summary>
  </entry>"""
        for a in articles
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>{escape(outlet.name)}</title>
  <link rel="alternate" href="{site.base_url}{outlet.path}/"/>
  <id>tag:{outlet.key}.example,2024:feed</id>
  <updated>{updated}</updated>{entries}
</feed>
"""


class _Handler(BaseHTTPRequestHandler):
    site: DemoSite
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == SIGNATURE_PATH:
            return self._send(200, "text/plain", b"newsmon demo")
        route = self.site.routes.get(path)
        if route is None:
            return self._send(404, "text/plain", b"not found")
        ctype, body, modified = route
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        last_modified = format_datetime(modified, usegmt=True)
        if self._not_modified(etag, modified):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send(200, ctype, body, {"ETag": etag, "Last-Modified": last_modified, "Cache-Control": "max-age=300"})

    def _not_modified(self, etag: str, modified: datetime) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            return etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*"
        ims = self.headers.get("If-Modified-Since")
        if ims:
            try:
                return modified <= parsedate_to_datetime(ims)
            except (TypeError, ValueError):
                return False
        return False

    def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET


class DemoServer:
    """A running (or reused) demo server."""

    def __init__(self, site: DemoSite, httpd: ThreadingHTTPServer | None) -> None:
        self.site = site
        self._httpd = httpd
        if httpd is not None:
            threading.Thread(target=httpd.serve_forever, name="newsmon-demo", daemon=True).start()

    @property
    def feeds(self) -> list[FeedSpec]:
        return self.site.feeds

    @property
    def base_url(self) -> str:
        return self.site.base_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> DemoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _already_serving(base_url: str) -> bool:
    try:
        return httpx.get(base_url + SIGNATURE_PATH, timeout=2).text == "newsmon demo"
    except httpx.HTTPError:
        return False


def start(settings: Settings) -> DemoServer:
    """Serve the demo site on loopback (or reuse one already serving on the port)."""
    port = settings.demo_port
    base_url = f"http://127.0.0.1:{port}"
    site = load_site(base_url)
    if port and _already_serving(base_url):
        return DemoServer(site, None)
    handler = type("DemoHandler", (_Handler,), {"site": site})
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError:
        if _already_serving(base_url):  # lost a race with another process starting it
            return DemoServer(site, None)
        raise
    httpd.daemon_threads = True
    if port == 0:  # tests: an ephemeral port, so the URLs are known only now
        site = load_site(f"http://127.0.0.1:{httpd.server_address[1]}")
        handler.site = site
    return DemoServer(site, httpd)


def demo_settings(settings: Settings) -> Settings:
    """The same settings with what the demo needs: loopback fetches and no age limit
    (the sample articles carry their real, older publication dates)."""
    http = settings.http.model_copy(update={"allow_private_addresses": True})
    ingest = settings.ingest.model_copy(update={"max_entry_age_days": 36500})
    return settings.model_copy(update={"http": http, "ingest": ingest, "demo": True})
