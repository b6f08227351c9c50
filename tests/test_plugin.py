"""The News Monitor view: its queries (pipeline.monitor), its chart, and the page served
by the real Airflow API server — behind Airflow's login — and seen in headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from airflow_harness import ROOT, ApiServer, _free_port

from pipeline import monitor
from pipeline.store import Article, Classification, Digest, Feed, Store, Story

sys.path.insert(0, str(ROOT / "plugins"))
from newsmon_monitor.chart import daily_chart_svg  # noqa: E402

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------- queries, on both store backends


def _seed(store: Store) -> dict[str, int]:
    with store.session() as s:
        ok = Feed(name="Indus Observer", url="https://indus.example/feed", country="PK", created_at=NOW - timedelta(days=30),
                  last_fetch_at=NOW - timedelta(minutes=20), last_success_at=NOW - timedelta(minutes=20),
                  last_new_entry_at=NOW - timedelta(hours=2), consecutive_failures=0)
        quiet = Feed(name="Quiet Gazette", url="https://quiet.example/rss", country="US", created_at=NOW - timedelta(days=30),
                     last_fetch_at=NOW - timedelta(minutes=20), last_success_at=NOW - timedelta(minutes=20),
                     last_new_entry_at=NOW - timedelta(days=5), consecutive_failures=0)
        bad = Feed(name="Broken Herald", url="https://broken.example/rss", country="IN", created_at=NOW - timedelta(days=30),
                   last_fetch_at=NOW - timedelta(minutes=20), last_success_at=NOW - timedelta(days=2),
                   consecutive_failures=4, last_status=503, last_error="HTTP 503 from broken.example")
        s.add_all([ok, quiet, bad])
        s.flush()
        st1 = Story(title="US and Pakistan <b>resume</b> talks", first_seen_at=NOW - timedelta(hours=3),
                    first_published_at=NOW - timedelta(hours=4), updated_at=NOW - timedelta(hours=1), article_count=2,
                    outlet_count=2, score=0.91, relevant=True, dyads=["US-PK"], topics=["diplomacy"])
        st2 = Story(title="India and Pakistan trade barbs over water treaty", first_seen_at=NOW - timedelta(days=3),
                    first_published_at=NOW - timedelta(days=3), updated_at=NOW - timedelta(days=3), article_count=1,
                    outlet_count=1, score=0.62, relevant=True, dyads=["IN-PK"], topics=["water", "diplomacy"])
        st3 = Story(title="Cricket scores", first_seen_at=NOW - timedelta(hours=5), updated_at=NOW - timedelta(hours=5),
                    article_count=1, outlet_count=1, score=0.05, relevant=False)
        s.add_all([st1, st2, st3])
        s.flush()
        arts = [
            Article(canonical_url="https://indus.example/a1", url="https://indus.example/a1", feed_id=ok.id, title="Talks resume",
                    outlet="Indus Observer", country="PK", fetched_at=NOW - timedelta(hours=3), story_id=st1.id,
                    published_at=NOW - timedelta(hours=4)),
            Article(canonical_url="https://quiet.example/a2", url="javascript:alert(1)", feed_id=quiet.id, title="Talks resume (copy)",
                    outlet="Quiet Gazette", country="US", fetched_at=NOW - timedelta(days=3), story_id=st1.id),
            Article(canonical_url="https://indus.example/a3", url="https://indus.example/a3", feed_id=ok.id, title="Water row",
                    outlet="Indus Observer", country="PK", fetched_at=NOW - timedelta(days=3), story_id=st2.id,
                    published_at=NOW - timedelta(days=3)),
            Article(canonical_url="https://indus.example/a4", url="https://indus.example/a4", feed_id=ok.id, title="Cricket",
                    outlet="Indus Observer", fetched_at=NOW - timedelta(days=10), story_id=st3.id),
        ]
        s.add_all(arts)
        s.flush()
        s.add(Classification(article_id=arts[0].id, version="t", score=0.91, relevant=True, dyads=["US-PK"],
                             topics=["diplomacy"], classified_at=NOW,
                             evidence=[{"sentence": "Washington and Islamabad agreed to resume talks.",
                                        "terms": ["Washington", "Islamabad"], "weight": 1.2}]))
        s.add(Digest(period_start=NOW - timedelta(days=1), period_end=NOW, status="delivered", created_at=NOW, sent_at=NOW,
                     recipients=["desk@example.org"], subject="Digest: 1 story", transport="smtp", story_count=1,
                     body_text="1. US and Pakistan resume talks", body_html="<p>US and Pakistan <b>resume</b> talks</p>"))
        return {"st1": st1.id, "st2": st2.id, "st3": st3.id}


def test_monitor_queries(store: Store) -> None:
    ids = _seed(store)
    stories = monitor.recent_stories(store)
    assert [s.id for s in stories] == [ids["st1"], ids["st2"]]  # relevant only, newest update first
    st1 = stories[0]
    assert st1.outlets == ("Indus Observer", "Quiet Gazette")
    assert st1.evidence[0].terms == ("Washington", "Islamabad")
    assert [s.id for s in monitor.recent_stories(store, monitor.StoryFilter(dyad="IN-PK"))] == [ids["st2"]]
    assert [s.id for s in monitor.recent_stories(store, monitor.StoryFilter(topic="water"))] == [ids["st2"]]
    assert [s.id for s in monitor.recent_stories(store, monitor.StoryFilter(min_score=0.9))] == [ids["st1"]]
    assert [s.id for s in monitor.recent_stories(store, monitor.StoryFilter(since=NOW - timedelta(days=1)))] == [ids["st1"]]
    assert [s.id for s in monitor.recent_stories(store, monitor.StoryFilter(until=NOW - timedelta(days=1)))] == [ids["st2"]]
    assert len(monitor.recent_stories(store, monitor.StoryFilter(relevant_only=False))) == 3
    assert monitor.topics_in_use(store) == ["diplomacy", "water"]

    health = {h.name: h for h in monitor.feed_health(store, now=NOW, quiet_after_hours=72)}
    assert health["Broken Herald"].status == "failing" and health["Broken Herald"].consecutive_failures == 4
    assert health["Quiet Gazette"].status == "quiet" and health["Quiet Gazette"].quiet
    assert health["Indus Observer"].status == "ok"
    assert (health["Indus Observer"].articles_24h, health["Indus Observer"].articles_7d) == (1, 2)
    assert list(health)[0] == "Broken Herald"  # failing feeds first

    daily = monitor.stories_per_day(store, days=7, now=NOW)
    assert daily.days[-1] == NOW.date() and len(daily.days) == 7
    assert daily.counts["US-PK"][-1] == 1 and daily.counts["IN-PK"][-4] == 1 and daily.total == 2

    (d,) = monitor.recent_digests(store)
    assert d.status == "delivered" and d.story_count == 1
    assert "resume" in monitor.digest_preview(store, d.id).body_html
    assert monitor.digest_preview(store, 999_999) is None


def test_chart_is_valid_accessible_svg() -> None:
    days = tuple(NOW.date() - timedelta(days=i) for i in range(13, -1, -1))
    data = monitor.DailyCounts(days=days, counts={"US-PK": (0,) * 13 + (5,), "US-IN": (1,) * 14, "IN-PK": (0,) * 14})
    svg = str(daily_chart_svg(data))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg" and root.get("role") == "img"
    assert root.find(f"{ns}title").text.startswith("Relevant stories per day")
    assert len(root.findall(f"{ns}polyline")) == 3
    assert "US-PK (5)" in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")


# ---------------------------------------------------------------- through the Airflow API server


def _get(url: str, *, cookie: str | None = None, bearer: str | None = None, accept: str = "text/html"):
    headers = {"Accept": accept}
    if cookie:
        headers["Cookie"] = f"_token={cookie}"
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):  # noqa: ANN002, ANN003
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def test_page_requires_an_airflow_login(api_server: ApiServer) -> None:
    url = api_server.base + "/newsmon/"
    status, headers, _ = _get(url)  # a browser without a session: sent to Airflow's login
    assert status in (302, 303, 307) and "/auth/login" in headers.get("location", headers.get("Location", ""))
    assert _get(url, accept="application/json")[0] == 401
    assert _get(api_server.base + "/newsmon/api/feeds", accept="application/json")[0] == 401
    assert _get(url, cookie="not-a-jwt", accept="application/json")[0] == 401
    # A token signed with another secret is refused too.
    forged = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"
    assert _get(url, bearer=forged, accept="application/json")[0] == 401


def test_page_shows_stories_feeds_and_digests(api_server: ApiServer, ingested, newsmon) -> None:
    token = api_server.token()
    status, headers, html = _get(api_server.base + "/newsmon/", cookie=token)
    assert status == 200, html[:500]
    assert "frame-ancestors 'self'" in headers.get("content-security-policy", headers.get("Content-Security-Policy", ""))
    store = Store(newsmon.store_url)
    try:
        stories = monitor.recent_stories(store)
        feeds = monitor.feed_health(store)
    finally:
        store.dispose()
    assert stories and feeds
    from markupsafe import escape

    for st in stories[:3]:
        assert str(escape(st.title))[:40] in html
    assert 'id="feed-table"' in html and all(str(escape(f.name)) in html for f in feeds)
    assert "<svg" in html and "Relevant stories per day" in html
    # filters work through the page
    status, _, filtered = _get(api_server.base + "/newsmon/?dyad=IN-PK&topic=no-such-topic", cookie=token)
    assert status == 200 and "No stories match" in filtered
    # the REST-style token works as a Bearer header, for the JSON endpoints
    status, _, body = _get(api_server.base + "/newsmon/api/stories", bearer=token, accept="application/json")
    assert status == 200 and len(json.loads(body)) == len(stories)
    # digest previews: the stored bodies, the HTML one in a sandboxed frame
    assert _get(api_server.base + "/newsmon/digests/999999", cookie=token)[0] == 404
    store = Store(newsmon.store_url)
    try:
        digests = monitor.recent_digests(store)
    finally:
        store.dispose()
    for d in digests[:1]:  # present when the digest tests ran first in the session
        status, _, page = _get(api_server.base + f"/newsmon/digests/{d.id}", cookie=token)
        assert status == 200 and 'sandbox=""' in page and "Text part" in page
    # the nav entry is registered with the UI
    status, _, body = _get(api_server.base + "/api/v2/plugins", bearer=token, accept="application/json")
    views = [v for p in json.loads(body)["plugins"] for v in p["external_views"]]
    assert any(v["name"] == "News Monitor" and v["href"] == "/newsmon/" for v in views)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_ui_in_headless_chromium(api_server: ApiServer, ingested, tmp_path: Path) -> None:
    browser = _chromium()
    if not browser:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium); .ci/run installs it")
    port = _free_port()
    proc = subprocess.Popen(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1", "--window-size=1400,1000",
         f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        result = asyncio.run(_drive(port, api_server, tmp_path / "news-monitor.png"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    shot = tmp_path / "news-monitor.png"
    keep = ROOT / "var" / "screenshots"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "news-monitor.png")
    assert "News Monitor" in result["nav"], result
    assert "Feed health" in result["frame"] and "Stories" in result["frame"], result["frame"][:500]
    assert result["feed_rows"] >= 3 and result["stories"] >= 1, result
    assert shot.stat().st_size > 10_000


async def _drive(port: int, api: ApiServer, shot: Path) -> dict:
    import websockets

    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                target = next(t for t in json.loads(r.read()) if t["type"] == "page")
            break
        except Exception:  # noqa: BLE001 - Chromium still starting
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
    async with websockets.connect(target["webSocketDebuggerUrl"], max_size=50_000_000) as ws:
        seq = 0

        async def call(method: str, **params):  # noqa: ANN202
            nonlocal seq
            seq += 1
            my = seq
            await ws.send(json.dumps({"id": my, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == my:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    return msg.get("result", {})

        async def evaluate(expr: str):  # noqa: ANN202
            r = await call("Runtime.evaluate", expression=expr, returnByValue=True)
            return r.get("result", {}).get("value")

        await call("Network.enable")
        await call("Network.setCookie", name="_token", value=api.token(), url=api.base + "/", path="/", httpOnly=True)
        await call("Page.enable")
        await call("Page.navigate", url=api.base + "/plugin/news-monitor")
        frame_text, nav, rows, stories = "", "", 0, 0
        for _ in range(60):  # the SPA and its iframe load asynchronously
            await asyncio.sleep(0.5)
            nav = await evaluate("document.body ? document.body.innerText : ''") or ""
            info = await evaluate(
                "(() => { const f = document.querySelector('iframe'); const d = f && f.contentDocument;"
                " if (!d || !d.body) return null;"
                " return {text: d.body.innerText, rows: d.querySelectorAll('#feed-table tbody tr').length,"
                " stories: d.querySelectorAll('article.story').length}; })()"
            )
            if info and info["rows"] and "News Monitor" in nav:
                frame_text, rows, stories = info["text"], info["rows"], info["stories"]
                break
        await asyncio.sleep(1.0)
        png = await call("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(png["data"]))
        return {"nav": nav, "frame": frame_text, "feed_rows": rows, "stories": stories}
