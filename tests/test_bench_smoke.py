"""The benchmark harness stays runnable: a tiny run of every section, and the workload's contract.

No timing is asserted here (speed targets live in ``bench/``); these tests check that the
generator is deterministic and realistic in shape, that the loopback site speaks conditional
GET, and that ``python -m bench.run`` produces its JSON and table on both store backends.
"""

from __future__ import annotations

import gzip
import json
import os
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bench import run as bench_run
from bench import stores
from bench.workload import LoopbackSite, WorkloadSpec, generate


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_workload_is_deterministic_and_shaped_like_news() -> None:
    spec = WorkloadSpec(feeds=6, entries_per_feed=8, seed=11)
    now = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    a, b = generate(spec, now=now), generate(spec, now=now)
    assert [x.html for x in a.articles] == [x.html for x in b.articles]
    assert [f.body for f in a.feeds] == [f.body for f in b.feeds]
    assert a.entries == 48 and len(a.articles) <= 48
    sizes = [len(x.html) for x in a.articles]
    assert min(sizes) >= 50 * 1024 and max(sizes) <= 150 * 1024 + 8 * 1024
    kinds = {x.kind for x in a.articles}
    assert {"original", "copy", "rewrite"} <= kinds
    assert any(x.relevant for x in a.articles) and not all(x.relevant for x in a.articles)
    page = a.articles[0].html.decode()
    for marker in ('application/ld+json', "<nav", "ad-slot", "comments", "related", "<script>", "<footer"):
        assert marker in page
    copy = next(x for x in a.articles if x.kind == "copy")
    original = a.articles[copy.copy_of]
    assert copy.outlet.slug != original.outlet.slug
    assert set(original.paragraphs[:3]) <= set(copy.paragraphs)
    # Another seed, other texts.
    c = generate(WorkloadSpec(feeds=6, entries_per_feed=8, seed=12), now=now)
    assert c.articles[0].text != a.articles[0].text


def test_loopback_site_serves_gzip_and_conditional_get() -> None:
    with LoopbackSite() as site:
        wl = generate(WorkloadSpec(feeds=2, entries_per_feed=2), site.base_for)
        site.publish(wl)
        feed = wl.feeds[0]
        status, headers, body = _get(feed.url, {"Accept-Encoding": "gzip"})
        assert status == 200 and headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(body) == feed.body
        etag, modified = headers["ETag"], headers["Last-Modified"]
        assert _get(feed.url, {"If-None-Match": etag})[0] == 304
        assert _get(feed.url, {"If-Modified-Since": modified})[0] == 304
        assert _get(feed.url, {"If-None-Match": '"other"'})[0] == 200
        art = wl.articles[0]
        status, _, body = _get(art.url)
        assert status == 200 and body == art.html
        assert _get(art.url.rsplit("/", 1)[0] + "/missing.html")[0] == 404
        stats = site.stats(reset=True)
        assert stats.not_modified == 2 and stats.requests == 6
        assert site.stats().requests == 0


def _pg_ok() -> bool:
    why = stores.pg_available()
    if why and os.environ.get("NEWSMON_REQUIRE_PG") == "1":
        pytest.fail(f"{why}; NEWSMON_REQUIRE_PG=1 makes PostgreSQL tests required")
    return why is None


def test_bench_run_smoke(tmp_path: Path) -> None:
    backends = "sqlite,postgresql" if _pg_ok() else "sqlite"
    out = tmp_path / "results"
    before = set(stores._pg_databases("newsmon_bench_tmp_")) if "postgresql" in backends else set()
    code = bench_run.main([
        "--quick", "--feeds", "2", "--entries", "3", "--sizes", "400,800", "--backends", backends,
        "--out", str(out), "--no-plot",
    ])
    res = json.loads((out / "bench.json").read_text())
    assert res["errors"] == {}, res["errors"]
    assert code == 0
    table = (out / "table.md").read_text()
    assert "End to end" in table and "bare `trafilatura.extract`" in table
    for backend in backends.split(","):
        e = res["e2e"][backend]
        assert e["articles"] == res["workload"]["articles"]
        assert e["second_pass"]["feeds_not_modified"] == res["workload"]["feeds"]
        assert e["stages"]["extract"]["pages_per_second"] > 0 and "ratio_to_bare_extraction" in e
        assert len(e["rounds"]) == res["profile"]["e2e_rounds"] and e["bare_pages_per_second"] > 0
        runs = [r for r in res["scaling"]["runs"] if r["backend"] == backend]
        assert [r["articles"] for r in runs] == [400, 800]
        for r in runs:
            assert r["rows"]["minhash_bands"] == 32 * r["articles"]
            assert r["rows"]["story_keys"] >= 20 * r["articles"]
            assert r["dedupe"]["articles"] == res["profile"]["probes"]
            assert len(r["dedupe"]["rounds_ms_per_article"]) == res["profile"]["scaling_rounds"]
            assert r["store_write"]["articles"] == res["profile"]["writes"]
        assert set(res["scaling"]["ratios"][backend]) >= {"dedupe", "store_write"}
        assert len(res["scaling"]["ratios"][backend]["dedupe_rounds"]) == res["profile"]["scaling_rounds"]
    assert res["parallel"]["speedup"] > 0
    assert res["baselines"]["trafilatura"]["pages"] == res["workload"]["articles"]
    # Throwaway stores are gone: no files left, no databases left.
    assert not list(out.glob("*.db"))
    if "postgresql" in backends:
        assert set(stores._pg_databases("newsmon_bench_tmp_")) <= before
