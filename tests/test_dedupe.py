"""Dedupe and story clustering: in memory, in the store (SQLite and PostgreSQL), and on the command line."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, shared_path
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from pipeline import dedupe
from pipeline import text as T
from pipeline.config import DedupeSettings, Settings
from pipeline.dedupe import Document, cluster_documents
from pipeline.store import Article, ArticleUrl, Classification, MinhashBand, Store, Story, StoryKey

FIX = FIXTURES / "dedupe"
T0 = datetime(2025, 10, 8, 14, 0, tzinfo=timezone.utc)


def _doc(name: str, published: datetime | None = None) -> Document:
    raw = (FIX / name).read_text(encoding="utf-8")
    return Document(id=name, text=T.clean_text(raw), title=T.guess_title(raw), published=published)


def _story_sets(result) -> set[frozenset[str]]:
    return {frozenset(s) for s in result.stories}


# ----------------------------------------------------------------------------- text helpers


def test_clean_text_drops_furniture_and_repeated_lines():
    raw = "Logo\nAdvertisement\nA caption that is printed twice under the photo.\nA caption that is printed twice under the photo.\nThe minister said the talks would resume next week in Geneva.\nShare"
    out = T.clean_text(raw)
    assert out.splitlines() == [
        "A caption that is printed twice under the photo.",
        "The minister said the talks would resume next week in Geneva.",
    ]


def test_content_hash_ignores_case_punctuation_and_spacing():
    a = T.content_hash("The U.S. said: “talks will resume.”")
    assert a == T.content_hash("the US said   talks will resume")
    assert a != T.content_hash("the US said talks will not resume")


def test_minhash_matches_datasketch_bit_for_bit():
    # The stored band hashes come from these values: a drift would split every story
    # across the articles clustered before and after it.
    import numpy as np
    from datasketch import MinHash

    rng = np.random.default_rng(7)
    for n in (1, 2, 5, 300, 4000):
        values = [int(v) for v in rng.integers(0, 2**32, n, dtype=np.uint64)] + [0, 2**32 - 1]
        ref = MinHash(num_perm=128, seed=1, hashfunc=int, scheme="affine32")
        ref.update_batch(values)
        assert np.array_equal(dedupe.minhash(values, 128), np.asarray(ref.hashvalues, dtype=np.uint32))
    shingles = T.shingles(T.words("the minister said the talks in Islamabad would resume next week"), 5)
    assert len(dedupe.band_hashes(shingles, 128, 32)) == 32
    assert dedupe.band_hashes(shingles, 128, 32) == dedupe.band_hashes(set(shingles), 128, 32)

def test_quotations_pair_quotes_and_run_to_paragraph_end():
    text = '“We are not a party to these talks,” she said. "And we never were\nNext paragraph.'
    quotes = [" ".join(q) for q in T.quotations(text)]
    assert quotes == ["we are not a party to these talks", "and we never were"]


def test_names_skip_sentence_initial_words_but_keep_names():
    names = set(T.names("Officials met on Monday. Deputy spokesperson Laura Whitfield spoke in New Delhi, Kirby said."))
    assert {"laura whitfield", "whitfield", "new delhi", "kirby"} <= names
    assert "officials" not in names and "monday" not in names


# ----------------------------------------------------------------------------- in memory


def test_syndicated_copy_with_other_boilerplate_is_a_duplicate():
    res = cluster_documents(
        [_doc("briefing_ledger.txt", T0), _doc("briefing_ledger_syndicated.txt", T0 + timedelta(hours=3))]
    )
    assert res.duplicates == (("briefing_ledger_syndicated.txt", "briefing_ledger.txt"),)
    assert len(res.stories) == 1


def test_updated_article_stays_one_article():
    # Headline changed, a paragraph added: a near-duplicate of the first version.
    res = cluster_documents([_doc("update_v1.txt", T0), _doc("update_v2.txt", T0 + timedelta(hours=5))])
    assert res.duplicates == (("update_v2.txt", "update_v1.txt"),)
    (a, b) = res.assignments
    assert b.reason == "near-duplicate" and b.similarity >= DedupeSettings().near_duplicate_threshold


def test_two_write_ups_of_one_briefing_are_one_story():
    res = cluster_documents([_doc("briefing_ledger.txt", T0), _doc("briefing_wire.txt", T0 + timedelta(hours=2))])
    assert len(res.stories) == 1
    assert res.duplicates == ()  # a different write-up, not a copy
    assert res.assignments[1].reason == "story"


def test_same_topic_months_apart_is_two_stories():
    # Similar wording, even a repeated stock quotation, but a briefing months earlier.
    docs = [_doc("briefing_earlier.txt", T0 - timedelta(days=120)), _doc("briefing_ledger.txt", T0)]
    res = cluster_documents(docs)
    assert _story_sets(res) == {frozenset({"briefing_earlier.txt"}), frozenset({"briefing_ledger.txt"})}


def test_robust_to_reordered_paragraphs_and_boilerplate_residue():
    raw = (FIX / "briefing_wire.txt").read_text(encoding="utf-8")
    paras = [p for p in raw.split("\n\n") if p.strip()]
    shuffled = (
        "\n\n".join([paras[0], *reversed(paras[1:])]) + "\n\nAdvertisement\nRead more: markets close higher on Friday\n"
    )
    docs = [
        _doc("briefing_wire.txt", T0),
        Document("shuffled", T.clean_text(shuffled), paras[0], T0 + timedelta(hours=1)),
    ]
    res = cluster_documents(docs)
    assert len(res.stories) == 1


def test_unrelated_article_is_its_own_story():
    docs = [
        _doc(n, T0 + timedelta(hours=i))
        for i, n in enumerate(["briefing_ledger.txt", "briefing_wire.txt", "update_v1.txt", "unrelated_cricket.txt"])
    ]
    res = cluster_documents(docs)
    assert _story_sets(res) == {
        frozenset({"briefing_ledger.txt", "briefing_wire.txt"}),
        frozenset({"update_v1.txt"}),
        frozenset({"unrelated_cricket.txt"}),
    }


def test_exact_copy_is_found_by_fingerprint():
    d = _doc("update_v1.txt", T0)
    res = cluster_documents([d, Document("again", d.text.upper(), "Other headline", T0 + timedelta(hours=1))])
    assert res.assignments[1].reason == "hash" and res.duplicates == (("again", "update_v1.txt"),)


_SENTENCES = [
    p.strip()
    for name in sorted(os.listdir(FIX))
    for p in (FIX / name).read_text(encoding="utf-8").split("\n")
    if len(p.split()) > 6
]


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.lists(st.sampled_from(_SENTENCES), min_size=1, max_size=6), st.integers(0, 300)),
        min_size=1,
        max_size=12,
    )
)
def test_every_document_in_exactly_one_story(spec):
    docs = [
        Document(id=f"d{i}", text="\n".join(sents), title=sents[0][:80], published=T0 + timedelta(hours=h))
        for i, (sents, h) in enumerate(spec)
    ]
    res = cluster_documents(docs)
    ids = [d for s in res.stories for d in s]
    assert sorted(ids) == sorted(d.id for d in docs)
    story_of = res.story_of()
    for copy, original in res.duplicates:
        assert story_of[copy] == story_of[original]
        assert original not in {c for c, _ in res.duplicates}  # copies point at originals, never at copies


# ----------------------------------------------------------------------------- command line


def _run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_cluster_seeds_gives_three_stories():
    seeds = shared_path("seeds")
    files = sorted(str(p) for p in seeds.glob("*.txt"))
    out = _run_cli("cluster", *files)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    got = {frozenset(Path(f).name[:3] for f in s) for s in data["stories"]}
    assert got == {frozenset({"001", "002"}), frozenset({"003", "004"}), frozenset({"000"})}
    assert data["duplicates"] == []


def test_cli_cluster_reports_copies_and_fails_cleanly(tmp_path):
    out = _run_cli("cluster", str(FIX / "briefing_ledger.txt"), str(FIX / "briefing_ledger_syndicated.txt"))
    data = json.loads(out.stdout)
    assert data["duplicates"] == [[str(FIX / "briefing_ledger_syndicated.txt"), str(FIX / "briefing_ledger.txt")]]
    bad = _run_cli("cluster", str(tmp_path / "missing.txt"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_cluster_reads_html_through_the_extractor():
    # The page version of an article and its plain-text copy are the same article.
    page, txt = str(FIX / "briefing_wire_page.html"), str(FIX / "briefing_wire.txt")
    out = _run_cli("cluster", page, txt, str(FIX / "update_v1.txt"))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["duplicates"] == [[txt, page]]
    assert sorted(map(sorted, data["stories"])) == sorted([sorted([page, txt]), [str(FIX / "update_v1.txt")]])


# ----------------------------------------------------------------------------- the store


def _add_article(
    s,
    name_or_text: str,
    at: datetime,
    *,
    url: str | None = None,
    outlet: str = "",
    guid: str = "",
    title: str | None = None,
) -> int:
    if name_or_text.endswith(".txt"):
        raw = (FIX / name_or_text).read_text(encoding="utf-8")
        text, head = T.clean_text(raw), T.guess_title(raw)
    else:
        text, head = name_or_text, name_or_text[:60]
    url = url or f"https://news.example/{name_or_text[:40].replace(' ', '-')}/{at.timestamp():.0f}"
    a = Article(
        canonical_url=url,
        url=url,
        title=title if title is not None else head,
        text=text,
        outlet=outlet,
        site=outlet.lower(),
        guid=guid,
        published_at=at,
        fetched_at=at + timedelta(minutes=10),
        word_count=len(text.split()),
    )
    s.add(a)
    s.flush()
    return a.id


def _check_invariants(store: Store) -> None:
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Article).where(Article.story_id.is_(None))) == 0
        for story in s.scalars(select(Story)):
            members = list(s.scalars(select(Article).where(Article.story_id == story.id)))
            assert members, f"story {story.id} has no articles"
            assert story.article_count == len(members)
            assert story.lead_article_id in {m.id for m in members}
            assert story.lead_article_id not in {m.id for m in members if m.duplicate_of_id}
        for a in s.scalars(select(Article).where(Article.duplicate_of_id.is_not(None))):
            original = s.get(Article, a.duplicate_of_id)
            assert original.story_id == a.story_id and original.duplicate_of_id is None


def test_store_assigns_copies_stories_and_traps(store: Store, settings: Settings):
    with store.session() as s:
        ledger = _add_article(s, "briefing_ledger.txt", T0, outlet="Ledger")
        copy = _add_article(s, "briefing_ledger_syndicated.txt", T0 + timedelta(hours=4), outlet="Frontier")
        wire = _add_article(s, "briefing_wire.txt", T0 + timedelta(hours=1), outlet="Wire")
        earlier = _add_article(s, "briefing_earlier.txt", T0 - timedelta(days=120), outlet="Ledger")
        v1 = _add_article(s, "update_v1.txt", T0 + timedelta(hours=2), outlet="Ledger")
        v2 = _add_article(s, "update_v2.txt", T0 + timedelta(hours=8), outlet="Ledger")
        cricket = _add_article(s, "unrelated_cricket.txt", T0, outlet="Ledger")
    report = dedupe.assign_pending(store, settings)
    assert (report.assigned, report.duplicates, report.stories_new) == (7, 2, 4)
    with store.session() as s:
        art = {a.id: a for a in s.scalars(select(Article))}
        assert art[copy].duplicate_of_id == ledger and art[copy].dedupe_reason == "near-duplicate"
        assert art[v2].duplicate_of_id == v1
        assert art[ledger].story_id == art[wire].story_id == art[copy].story_id
        assert art[wire].dedupe_reason == "story" and art[wire].duplicate_of_id is None
        assert art[earlier].story_id not in {art[ledger].story_id, art[v1].story_id}
        assert art[cricket].story_id not in {art[ledger].story_id, art[v1].story_id, art[earlier].story_id}
        story = s.get(Story, art[ledger].story_id)
        assert (story.article_count, story.outlet_count) == (3, 3)
        assert story.first_published_at == T0  # the earliest member, not the first assigned
        assert story.lead_article_id in (ledger, wire)
        assert sorted(report.story_ids) == sorted({a.story_id for a in art.values()})
        # The text fingerprint is dedupe's to set (an extracted article is stored without one).
        assert all(a.content_hash == T.content_hash(a.text) for a in art.values())
        # Keys and bands are stored for later lookups.
        assert (
            s.scalar(select(func.count()).select_from(MinhashBand).where(MinhashBand.article_id == wire))
            == settings.dedupe.lsh_bands
        )
        assert s.scalar(select(func.count()).select_from(StoryKey).where(StoryKey.article_id == wire)) > 5
    _check_invariants(store)
    # Nothing pending: a second pass changes nothing.
    again = dedupe.assign_pending(store, settings)
    assert again.assigned == 0


def test_settler_settles_batches_in_its_own_process_then_the_rest(store: Store, settings: Settings):
    from pipeline import ingest

    with store.session() as s:
        ledger = _add_article(s, "briefing_ledger.txt", T0, outlet="Ledger")
        wire = _add_article(s, "briefing_wire.txt", T0 + timedelta(hours=1), outlet="Wire")
        # Never submitted: an earlier, interrupted pass left it; the last pass takes it.
        cricket = _add_article(s, "unrelated_cricket.txt", T0, outlet="Ledger")
    settler = ingest.Settler(settings.model_copy(update={"database_url": store.url}))
    settler.submit([ledger, wire])
    result = settler.close(rest=True)
    assert settler.errors == []
    assert not settler.proc.is_alive()
    assert (result.stories_new, result.duplicates, result.classified) == (2, 0, 3)
    assert result.relevant >= 2 and result.dedupe_seconds > 0
    _check_invariants(store)
    with store.session() as s:
        art = {a.id: a for a in s.scalars(select(Article))}
        assert art[ledger].story_id == art[wire].story_id != art[cricket].story_id
        assert s.scalar(select(func.count()).select_from(Classification)) == 3


def test_settler_gone_is_reported_and_its_work_stays_pending(store: Store, settings: Settings):
    from pipeline import ingest

    with store.session() as s:
        ledger = _add_article(s, "briefing_ledger.txt", T0, outlet="Ledger")
    settler = ingest.Settler(settings.model_copy(update={"database_url": store.url}))
    settler.proc.kill()
    settler.proc.join(5)
    settler.submit([ledger])
    result = settler.close(rest=True)
    # The caller learns the batches were not settled, and settles them itself.
    assert settler.errors and "gone" in settler.errors[0]
    assert result.stories_new == 0
    with store.session() as s:
        assert s.get(Article, ledger).story_id is None
    assert ingest.settle(store, settings).stories_new == 1
    _check_invariants(store)


def test_store_later_articles_join_existing_stories(store: Store, settings: Settings):
    with store.session() as s:
        ledger = _add_article(s, "briefing_ledger.txt", T0, outlet="Ledger")
    dedupe.assign_pending(store, settings)
    with store.session() as s:
        wire = _add_article(s, "briefing_wire.txt", T0 + timedelta(hours=6), outlet="Wire")
        late = _add_article(
            s, "briefing_wire.txt", T0 + timedelta(days=9), outlet="Wire Weekly", title="A week later"
        )  # outside the story window: its own story
    report = dedupe.assign_pending(store, settings, article_ids=[wire])
    assert report.assigned == 1 and report.stories_new == 0
    with store.session() as s:
        assert s.get(Article, wire).story_id == s.get(Article, ledger).story_id
        assert s.get(Article, late).story_id is None  # not asked for
    dedupe.assign_pending(store, settings)
    with store.session() as s:
        late_a = s.get(Article, late)
        # Same text 9 days later: a copy of the earlier article (copies are matched over a longer window).
        assert late_a.duplicate_of_id == wire and late_a.story_id == s.get(Article, wire).story_id
    _check_invariants(store)


def test_store_same_article_by_url_alias_and_guid(store: Store, settings: Settings):
    with store.session() as s:
        first = _add_article(
            s, "update_v1.txt", T0, url="https://ledger.example/news/123", guid="https://ledger.example/?p=123"
        )
        s.add(ArticleUrl(url="https://ledger.example/news/123/amp-edition", article_id=first))
        # The same feed item under another link: known by its GUID, whatever the text.
        by_guid = _add_article(
            s,
            "Totally reworded text of the minerals agreement story " * 3,
            T0 + timedelta(hours=1),
            url="https://ledger.example/business/123",
            guid="https://ledger.example/?p=123",
        )
        # Stored under a URL that is already another article's alias.
        by_alias = _add_article(
            s, "Another text entirely " * 5, T0 + timedelta(hours=2), url="https://ledger.example/news/123/amp-edition"
        )
        other = _add_article(
            s,
            "Nothing in common with anything above " * 5,
            T0 + timedelta(hours=2),
            url="https://mirror.example/x",
            guid="short",
        )
    dedupe.assign_pending(store, settings)
    with store.session() as s:
        a = s.get(Article, by_guid)
        assert a.duplicate_of_id == first and a.dedupe_reason == "guid"
        b = s.get(Article, by_alias)
        assert b.duplicate_of_id == first and b.dedupe_reason == "url"
        assert s.get(Article, other).duplicate_of_id is None
    _check_invariants(store)


def test_refresh_stories_derives_score_and_labels(store: Store, settings: Settings):
    with store.session() as s:
        ledger = _add_article(s, "briefing_ledger.txt", T0, outlet="Ledger")
        wire = _add_article(s, "briefing_wire.txt", T0 + timedelta(hours=1), outlet="Wire")
    dedupe.assign_pending(store, settings)
    with store.session() as s:
        for aid, score, rel, dyads, topics in [
            (ledger, 0.4, False, ["IN-PK"], ["diplomacy"]),
            (wire, 0.9, True, ["US-IN", "IN-PK"], ["talks"]),
        ]:
            s.add(
                Classification(
                    article_id=aid,
                    version="t1",
                    score=score,
                    relevant=rel,
                    dyads=dyads,
                    topics=topics,
                    evidence=[],
                    classified_at=T0,
                )
            )
    with store.session() as s:
        sid = s.get(Article, ledger).story_id
        dedupe.refresh_stories(s, [sid])
    with store.session() as s:
        story = s.get(Story, sid)
        assert story.score == pytest.approx(0.9) and story.relevant is True
        assert story.dyads == ["IN-PK", "US-IN"] and story.topics == ["diplomacy", "talks"]


def test_stories_command_lists_sources(sqlite_store: Store, settings: Settings, tmp_path):
    with sqlite_store.session() as s:
        _add_article(s, "briefing_ledger.txt", T0, outlet="Ledger")
        _add_article(s, "briefing_wire.txt", T0 + timedelta(hours=1), outlet="Wire")
    dedupe.assign_pending(sqlite_store, settings)
    env = {"NEWSMON_DATABASE_URL": str(sqlite_store.url), "NEWSMON_HOME": str(tmp_path)}
    out = _run_cli("stories", "--json", "--limit", "5", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data) == 1 and data[0]["articles"] == 2
    assert {m["outlet"] for m in data[0]["sources"]} == {"Ledger", "Wire"}
    table = _run_cli("stories", env=env)
    assert table.returncode == 0 and "Ledger" in table.stdout


# ----------------------------------------------------------------------------- concurrency (PostgreSQL)


def _worker(url: str, barrier, results) -> None:
    store = Store(url)
    settings = Settings(dedupe={"df_sample_size": 50})
    with store.session() as s:  # connect and warm up before the race starts
        s.execute(select(1))
    dedupe.featurize("warm up", "warm up the tokenizer and the hashing", 5)
    barrier.wait(60)
    r = dedupe.assign_pending(store, settings)
    results.put((r.assigned, r.stories_new))
    store.dispose()


def test_concurrent_assign_pending_makes_one_story_for_copies(pg_store: Store):
    # Syndicated copies of one article, two workers racing to cluster them. Without
    # the dedupe lock both would see them all pending and open a story each.
    raw = (FIX / "briefing_ledger.txt").read_text(encoding="utf-8")
    body = T.clean_text(raw)
    n = 24
    with pg_store.session() as s:
        for i in range(n):
            _add_article(
                s,
                body + f"\nSyndicated by outlet number {i} of the network.",
                T0 + timedelta(minutes=i),
                url=f"https://outlet{i}.example/story",
                outlet=f"Outlet {i}",
            )
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(pg_store.url, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    try:
        barrier.wait(60)
        outcomes = [results.get(timeout=90) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert sum(a for a, _ in outcomes) == n
    assert sum(k for _, k in outcomes) == 1
    with pg_store.session() as s:
        assert s.scalar(select(func.count()).select_from(Story)) == 1
        assert s.scalar(select(func.count()).select_from(Article).where(Article.duplicate_of_id.is_not(None))) == n - 1
    _check_invariants(pg_store)


@pytest.mark.parametrize("max_key_postings", [16, 2])
def test_store_batch_clusters_as_the_memory_clustering_does(store: Store, settings: Settings, max_key_postings: int):
    """One batch in an empty store: the store's lookups (on PostgreSQL partly answered from
    the batch's unwritten key and band rows) decide exactly as ``cluster_documents``, also
    when keys are held by more articles than the per-key cap."""
    from bench.workload import WorkloadSpec, generate

    wl = generate(WorkloadSpec(feeds=3, entries_per_feed=14, page_kb=(8, 12)), lambda outlet: "https://bench.example")
    docs = sorted(wl.articles, key=lambda a: a.published)[:40]
    cfg = settings.dedupe.model_copy(update={"max_key_postings": max_key_postings})
    cfg_settings = settings.model_copy(update={"dedupe": cfg})
    with store.session() as s:
        ids = [_add_article(s, a.text, a.published, url=f"https://bench.example/{n}", title=a.title) for n, a in enumerate(docs)]
    dedupe.assign_pending(store, cfg_settings)
    memory = cluster_documents([Document(str(i), a.text, a.title, a.published) for i, a in zip(ids, docs)], cfg)
    with store.session() as s:
        stored = {a.id: a for a in s.scalars(select(Article))}
    by_story: dict[int, list[str]] = {}
    for i in ids:
        by_story.setdefault(stored[i].story_id, []).append(str(i))
    assert sorted(map(sorted, by_story.values())) == sorted(map(sorted, memory.stories))
    assert sorted((str(i), str(stored[i].duplicate_of_id)) for i in ids if stored[i].duplicate_of_id) == sorted(
        memory.duplicates
    )
    assert len(memory.stories) < len(docs) and memory.duplicates  # the batch has copies and shared stories
    _check_invariants(store)


def test_index_rows_not_yet_written_are_found_as_stored_ones(store: Store, settings: Settings):
    """Band and key rows the index holds back until the end of a batch (PostgreSQL) answer
    lookups exactly as the stored rows do after the flush: the newest cap + 1 postings of
    each key inside the window, band matches, the stories of the postings."""
    cfg = settings.dedupe.model_copy(update={"max_key_postings": 2})
    with store.session() as s:
        ids = [_add_article(s, f"article number {n} " * 20, T0 + timedelta(hours=n)) for n in range(6)]

        def look(index):
            return index.lookup(None, [(0, 7), (1, 3)], [(0, 100), (1, 203), (1, 999)],
                                T0 + timedelta(hours=1), T0 + timedelta(hours=10), cfg.max_key_postings)

        index = dedupe._StoreIndex(s, cfg)
        for n, aid in enumerate(ids):
            index.add(aid, 1000 + n, T0 + timedelta(hours=n), [(0, 7), (1, n)], [(0, 100), (1, 200 + n)])
        held = look(index)
        held_stories = {a: index.story_of(a) for refs in held.postings.values() for a in refs}
        index.flush()
        fresh = dedupe._StoreIndex(s, cfg)
        stored = look(fresh)
        stored_stories = {a: fresh.story_of(a) for refs in stored.postings.values() for a in refs}
    assert held.bands == stored.bands == set(ids)
    assert {k: sorted(v) for k, v in held.postings.items()} == {k: sorted(v) for k, v in stored.postings.items()}
    assert sorted(stored.postings[100]) == ids[3:]  # the newest three inside the window (cap 2 + 1)
    assert stored.postings[203] == [ids[3]] and 999 not in stored.postings
    assert held_stories == stored_stories == {a: 1000 + ids.index(a) for a in ids[3:]}
