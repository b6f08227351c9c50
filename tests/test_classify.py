"""Relevance classification: decisions, dyads, topics, evidence, watch profile, store stages, CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, select, update

from conftest import FIXTURES, shared_path
from pipeline import classify as C
from pipeline.classify import DYADS, Classifier, WatchProfile, classify_pending, reclassify
from pipeline.config import Settings
from pipeline.store import Article, Classification as ClassificationRow, Story, Store

CASES = [json.loads(line) for line in (FIXTURES / "classify" / "cases.jsonl").read_text().splitlines() if line.strip()]
BY_ID = {c["id"]: c for c in CASES}


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier()


def case(cid: str) -> tuple[str, str]:
    return BY_ID[cid]["title"], BY_ID[cid]["text"]


# ---------------------------------------------------------------- decisions


def test_seeds_are_relevant_with_their_dyads(clf: Classifier) -> None:
    seeds = sorted(shared_path("seeds").glob("*.txt"))
    assert len(seeds) == 5
    for p in seeds:
        c = clf.classify("", p.read_text(encoding="utf-8"))
        assert c.relevant and c.score >= 0.9, (p.name, c)
        assert "US-PK" in c.dyads, (p.name, c.dyads)
        if p.name[:3] in ("000", "001", "002"):
            assert "IN-PK" in c.dyads, (p.name, c.dyads)
        assert c.evidence and all(e.sentence and e.terms for e in c.evidence)


@pytest.mark.parametrize("cid", [c["id"] for c in CASES if c["relevant"]])
def test_positives_relevant_with_dyads_and_evidence(clf: Classifier, cid: str) -> None:
    c = clf.classify(*case(cid))
    assert c.relevant and c.score >= 0.5, c
    assert set(c.dyads) == set(BY_ID[cid]["dyads"])
    assert c.evidence, "a relevant article must say why"
    top = max(c.evidence, key=lambda e: e.weight)
    assert top.weight > 0 and top.terms and top.sentence


@pytest.mark.parametrize("cid", [c["id"] for c in CASES if not c["relevant"]])
def test_hard_negatives_not_relevant(clf: Classifier, cid: str) -> None:
    c = clf.classify(*case(cid))
    assert not c.relevant and c.score < 0.5, (BY_ID[cid]["kind"], c)
    # Labels are for relevant articles only: a cricket report adds no dyads to its story.
    assert c.dyads == () and c.topics == ()


def test_hard_negative_kinds_are_covered() -> None:
    kinds = {c["kind"] for c in CASES if not c["relevant"]}
    assert {"cricket", "domestic", "india-china", "pakistan-china", "business-brief", "disaster", "entertainment"} <= kinds


@pytest.mark.parametrize(
    ("cid", "expected"),
    [
        ("p01", {"kashmir"}),
        ("p02", {"trade"}),
        ("p03", {"counter-terrorism"}),
        ("p05", {"diplomacy"}),
        ("p06", {"defence"}),
        ("p09", {"visas-diaspora"}),
        ("p11", {"sanctions", "nuclear"}),
        ("p12", {"counter-terrorism"}),
        ("p14", {"defence"}),
    ],
)
def test_topics(clf: Classifier, cid: str, expected: set[str]) -> None:
    c = clf.classify(*case(cid))
    assert expected <= set(c.topics), c.topics
    assert len(c.topics) <= C.MAX_TOPICS


def test_trilateral_story_names_all_three_dyads(clf: Classifier) -> None:
    c = clf.classify(*case("p07"))
    assert set(c.dyads) == set(DYADS)


def test_headline_only(clf: Classifier) -> None:
    assert clf.classify("India, Pakistan trade fire along LoC; Islamabad summons envoy", "").relevant
    assert not clf.classify("Mindy Kaling on being an Indian woman with her own show", "").relevant


def test_mentions_are_not_relations(clf: Classifier) -> None:
    # Both countries named, no relation between them.
    text = (
        "Pakistan's economy grew 2.5 per cent last year, the finance ministry said. "
        "India's economy grew 6.5 per cent over the same period, official data showed. "
        "Both countries are expected to post faster growth in the coming year."
    )
    assert not clf.classify("South Asia growth figures", text).relevant


def test_dateline_is_not_an_actor(clf: Classifier) -> None:
    text = (
        "NEW DELHI, March 3 (Reuters) - The United States will raise its interest rates twice this year, "
        "the Federal Reserve said in a statement on Monday, adding that inflation remained high."
    )
    a = clf.analyse("Fed signals two rate rises", text)
    assert not a.classification.relevant
    assert a.dyad_evidence["US-IN"] == 0


def test_common_surnames_need_the_full_name(clf: Classifier) -> None:
    text = "Miller said the tariffs on India would stay. Price told reporters that India would respond."
    assert clf.analyse("", text).dyad_evidence["US-IN"] == 0
    full = "State Department spokesperson Matthew Miller spoke at the briefing. " + text
    assert clf.analyse("", full).dyad_evidence["US-IN"] > 0


def test_blockers_hide_country_words(clf: Classifier) -> None:
    text = (
        "The Washington Post reported that Indian Ocean shipping rates rose. "
        "The Times of India said the Pakistan Super League final drew record crowds."
    )
    a = clf.analyse("", text)
    assert all(v == 0 for v in a.dyad_evidence.values())


def test_reported_speech_inherits_the_speaker(clf: Classifier) -> None:
    text = (
        "Foreign Office spokesperson Shafqat Ali Khan addressed the weekly briefing on Friday. "
        "\"India must stop its hostile rhetoric,\" he said."
    )
    assert clf.analyse("", text).dyad_evidence["IN-PK"] > 0


def test_classify_is_pure_and_versioned(clf: Classifier) -> None:
    a = clf.classify(*case("p02"))
    b = clf.classify(*case("p02"))
    assert a == b
    assert a.version == clf.version and a.version.startswith(C.RULES_VERSION + "+")
    empty = clf.classify("", "")
    assert empty.score == 0.0 and not empty.relevant and empty.version == clf.version


def test_unicode_and_noise_are_harmless(clf: Classifier) -> None:
    text = "İstanbul\u00a0— “Pakistan’s Foreign Office” summoned India’s envoy over the LoC shelling.\u200b\n\n\n"
    c = clf.classify("", text)
    assert c.relevant and c.dyads == ("IN-PK",)


# ---------------------------------------------------------------- watch profile


def write_profile(tmp_path: Path, body: str, name: str = "profile.toml") -> Path:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    return p


def test_profile_changes_decisions_without_code(tmp_path: Path) -> None:
    base = Settings(home=tmp_path / "home")
    title, text = case("p01")
    before = C.get_classifier(base)
    assert before.classify(title, text).relevant

    muted = write_profile(tmp_path, '[[exclude]]\nterms = ["LoC"]\nscope = "title"\n', "mute.toml")
    s_mute = Settings(home=tmp_path / "home", classify={"profile_file": muted})
    c = C.get_classifier(s_mute).classify(title, text)
    assert not c.relevant and c.score == 0.0
    assert "muted" in c.evidence[0].sentence and c.evidence[0].terms == ("LoC",)
    assert C.get_classifier(s_mute).version != before.version

    strict = write_profile(tmp_path, "threshold = 0.9999\n", "strict.toml")
    s_strict = Settings(home=tmp_path / "home", classify={"profile_file": strict})
    c = C.get_classifier(s_strict).classify(title, text)
    assert not c.relevant and c.score > 0.9  # the score is kept, only the bar moved

    # The settings threshold applies when the profile sets none.
    s_low = Settings(home=tmp_path / "home", classify={"threshold": 0.001})
    assert C.get_classifier(s_low).classify(*case("n09")).relevant


def test_profile_include_terms(tmp_path: Path) -> None:
    title = "India, Iran sign ten-year deal to run Chabahar port"
    text = "India Ports Global will operate the Chabahar terminal for ten years under the agreement signed in Tehran."
    assert not Classifier().classify(title, text).relevant
    p = write_profile(
        tmp_path,
        '[[include]]\nterms = ["Chabahar"]\ndyads = ["US-IN"]\ntopics = ["sanctions"]\nweight = 2.0\n',
    )
    c = Classifier(profile=WatchProfile.load(p)).classify(title, text)
    assert c.relevant and c.dyads == ("US-IN",) and "sanctions" in c.topics
    assert any("Chabahar" in e.terms for e in c.evidence)


def test_profile_reload_on_change(tmp_path: Path) -> None:
    p = write_profile(tmp_path, "threshold = 0.5\n")
    s = Settings(home=tmp_path / "home", classify={"profile_file": p})
    v1 = C.get_classifier(s).version
    import os

    write_profile(tmp_path, "threshold = 0.6\n")
    st = p.stat()
    os.utime(p, (st.st_atime, st.st_mtime + 5))
    assert C.get_classifier(s).version != v1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[include]]\nterms = ["x"]\ndyads = ["US-CN"]\n', "unknown dyad"),
        ('[[exclude]]\nterms = ["x"]\nscope = "page"\n', "scope"),
        ("threshold = 1.5\n", "threshold"),
        ("threshold = [\n", "profile"),
    ],
)
def test_bad_profiles_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WatchProfile.load(write_profile(tmp_path, body))


def test_missing_profile_file_is_an_error(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home", classify={"profile_file": tmp_path / "nope.toml"})
    with pytest.raises(ValueError, match="no such file"):
        C.get_classifier(s)


def test_default_profile_is_valid() -> None:
    p = WatchProfile.load(C.DEFAULT_PROFILE_FILE)
    assert p.threshold is None and p.include == () and p.exclude == ()


# ---------------------------------------------------------------- store stages

T0 = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)


def seed_store(store: Store) -> dict[str, int]:
    """Two stories (one relevant pair of copies, one cricket report) and an unclustered article."""
    ids: dict[str, int] = {}
    with store.session() as s:
        st1 = Story(title="", first_seen_at=T0, updated_at=T0)
        st2 = Story(title="", first_seen_at=T0, updated_at=T0)
        s.add_all([st1, st2])
        s.flush()
        plan = [
            ("p01", st1.id, T0),
            ("p13", st1.id, T0 + timedelta(hours=1)),
            ("n01", st2.id, T0 + timedelta(days=3)),
            ("p02", None, T0 + timedelta(days=10)),
        ]
        for cid, sid, when in plan:
            url = f"https://example.org/{cid}"
            a = Article(
                canonical_url=url, url=url, title=BY_ID[cid]["title"], text=BY_ID[cid]["text"],
                fetched_at=when, published_at=when, story_id=sid, outlet=cid,
            )  # fmt: skip
            s.add(a)
            s.flush()
            ids[cid] = a.id
        ids["story_relevant"], ids["story_cricket"] = st1.id, st2.id
    return ids


def rows(store: Store) -> dict[int, ClassificationRow]:
    with store.session() as s:
        return {r.article_id: r for r in s.scalars(select(ClassificationRow))}


def test_classify_pending_and_reclassify(store: Store, settings: Settings, tmp_path: Path) -> None:
    ids = seed_store(store)
    clf = C.get_classifier(settings)

    rep = classify_pending(store, settings)
    assert rep.classified == 4 and rep.relevant == 3
    assert set(rep.story_ids) == {ids["story_relevant"], ids["story_cricket"]}
    stored = rows(store)
    assert {r.version for r in stored.values()} == {clf.version}
    p01 = stored[ids["p01"]]
    assert p01.relevant and p01.dyads == ["IN-PK"] and p01.score > 0.5 and "kashmir" in p01.topics
    assert p01.evidence and {"sentence", "terms", "weight"} <= set(p01.evidence[0])
    assert not stored[ids["n01"]].relevant and stored[ids["n01"]].dyads == []

    # Stories carry their members' decisions (dedupe.refresh_stories).
    with store.session() as s:
        st1, st2 = s.get(Story, ids["story_relevant"]), s.get(Story, ids["story_cricket"])
        assert st1.relevant and st1.dyads == ["IN-PK"] and st1.score == pytest.approx(max(
            stored[ids["p01"]].score, stored[ids["p13"]].score))  # fmt: skip
        assert not st2.relevant and st2.dyads == []

    # Nothing left to do at the same version.
    assert classify_pending(store, settings).classified == 0

    # Explicit ids are redone whatever their version.
    rep = classify_pending(store, settings, article_ids=[ids["n01"]])
    assert rep.classified == 1 and rep.relevant == 0 and rep.story_ids == [ids["story_cricket"]]

    # A profile change makes every stored decision stale: the next pass redoes them all.
    strict = write_profile(tmp_path, "threshold = 0.9999\n")
    s2 = settings.model_copy(update={"classify": settings.classify.model_copy(update={"profile_file": strict})})
    v2 = C.get_classifier(s2).version
    assert v2 != clf.version

    # A backfill over a date range touches only that range.
    rep = reclassify(store, s2, since=T0 - timedelta(days=1), until=T0 + timedelta(days=2))
    assert rep.classified == 2 and rep.relevant == 0
    stored = rows(store)
    assert stored[ids["p01"]].version == v2 and not stored[ids["p01"]].relevant
    assert stored[ids["p02"]].version == clf.version
    with store.session() as s:
        assert not s.get(Story, ids["story_relevant"]).relevant

    # Without force, the range is now current; with force it is redone.
    assert reclassify(store, s2, since=T0 - timedelta(days=1), until=T0 + timedelta(days=2)).classified == 0
    assert reclassify(store, s2, since=T0 - timedelta(days=1), until=T0 + timedelta(days=2), force=True).classified == 2

    rep = classify_pending(store, s2)
    assert rep.classified == 2  # the two articles outside the range
    assert {r.version for r in rows(store).values()} == {v2}

    with pytest.raises(ValueError, match="naive"):
        reclassify(store, s2, since=datetime(2026, 1, 1))


def test_classify_pending_uses_summary_when_text_is_missing(sqlite_store: Store, settings: Settings) -> None:
    with sqlite_store.session() as s:
        url = "https://example.org/summary-only"
        s.add(Article(canonical_url=url, url=url, title="", text="", summary=" ".join(case("p04")), fetched_at=T0))
    rep = classify_pending(sqlite_store, settings)
    assert rep.classified == 1 and rep.relevant == 1 and rep.story_ids == []


def mirrors(store: Store) -> dict[int, str | None]:
    with store.session() as s:
        return dict(s.execute(select(Article.id, Article.classified_version)).tuples().all())


def ids_of(ids: dict[str, int]) -> list[int]:
    return [ids[k] for k in ("p01", "p13", "n01", "p02")]


def test_pending_queue_is_articles_classified_version(store: Store, settings: Settings) -> None:
    ids = seed_store(store)
    v = C.get_classifier(settings).version
    assert classify_pending(store, settings).classified == 4
    assert mirrors(store) == dict.fromkeys(ids_of(ids), v)

    # The queue is the article's column: a decision row with a current mirror is done, and
    # a NULL mirror is pending even though its row exists.
    with store.session() as s:
        s.execute(update(Article).where(Article.id == ids["p02"]).values(classified_version=None))
    before = rows(store)[ids["p01"]].classified_at
    rep = classify_pending(store, settings)
    assert rep.classified == 1 and rep.story_ids == []
    assert rows(store)[ids["p01"]].classified_at == before
    assert mirrors(store)[ids["p02"]] == v

    # Stale versions on both sides of the current one, and NULLs, interleaved: all found, in
    # id order, across batches; nothing else is touched.
    stale = {ids["p01"]: "0.0+older", ids["n01"]: "zz+newer", ids["p13"]: None}
    with store.session() as s:
        for aid, ver in stale.items():
            s.execute(update(Article).where(Article.id == aid).values(classified_version=ver))
        assert C._pending_ids(s, v, 0, 10) == sorted(stale)
        assert C._pending_ids(s, v, min(stale), 1) == [sorted(stale)[1]]
        assert sorted(C._stale_versions(s, v)) == ["0.0+older", "zz+newer"]
    p02_at = rows(store)[ids["p02"]].classified_at
    old_batch, C.BATCH_SIZE = C.BATCH_SIZE, 1
    try:
        rep = classify_pending(store, settings)
    finally:
        C.BATCH_SIZE = old_batch
    assert rep.classified == 3
    assert mirrors(store) == dict.fromkeys(ids_of(ids), v)
    assert {r.version for r in rows(store).values()} == {v}
    assert rows(store)[ids["p02"]].classified_at == p02_at


def test_pending_query_reads_the_index(store: Store, settings: Settings) -> None:
    """Finding pending work reads the classified_version index, never the whole table."""
    v = C.get_classifier(settings).version
    with store.session() as s:
        s.execute(Article.__table__.insert(), [
            {"canonical_url": f"https://example.org/bg/{i}", "url": f"https://example.org/bg/{i}", "fetched_at": T0,
             "classified_version": v if i % 1000 else (None if i % 2000 else "0.9+old")}
            for i in range(1, 4001)
        ])  # fmt: skip
    with store.engine.begin() as c:
        c.exec_driver_sql("ANALYZE")  # statistics as a long-running store has them
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", grab)
    try:
        with store.session() as s:
            assert len(C._pending_ids(s, v, 0, 500)) == 4
    finally:
        event.remove(store.engine, "before_cursor_execute", grab)
    assert seen
    pg = store.dialect == "postgresql"
    with store.engine.connect() as c:
        for statement, params in seen:
            if pg:
                plan = "\n".join(r[0] for r in c.exec_driver_sql("EXPLAIN " + statement, params))
                assert "Seq Scan on articles" not in plan, plan
            else:
                plan = "\n".join(r[-1] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
                assert not any(line.startswith("SCAN articles") for line in plan.splitlines()), plan
                assert "PRIMARY KEY" not in plan, plan
            assert "ix_articles_classified_version" in plan, plan


# ---------------------------------------------------------------- CLI


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from pipeline.cli import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_classify_files(tmp_path: Path, capsys, monkeypatch, settings: Settings) -> None:
    from pipeline.cli import _common

    monkeypatch.setattr(_common, "settings", lambda: settings)
    txt = tmp_path / "a.txt"
    txt.write_text(case("p03")[0] + "\n" + case("p03")[1], encoding="utf-8")
    html = tmp_path / "b.html"
    title, body = case("n02")
    paras = "".join(f"<p>{p}</p>" for p in body.split("\n"))
    html.write_text(f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>{paras}</article></body></html>")
    rc, out, err = run_cli(capsys, "classify", str(txt), str(html))
    assert rc == 0, err
    a, b = (json.loads(line) for line in out.splitlines())
    assert set(a) == {"file", "relevant", "score", "dyads", "topics", "evidence"}
    assert a["file"] == str(txt) and a["relevant"] and a["dyads"] == ["US-PK"] and a["evidence"]
    assert b["file"] == str(html) and not b["relevant"] and b["dyads"] == []

    mute = write_profile(tmp_path, '[[exclude]]\nterms = ["ISIS-K"]\nscope = "lead"\n')
    rc, out, _ = run_cli(capsys, "classify", "--profile", str(mute), "--explain", str(txt))
    d = json.loads(out)
    assert rc == 0 and not d["relevant"] and d["version"] != a.get("version") and "features" in d

    rc, out, err = run_cli(capsys, "classify", str(txt), str(tmp_path / "missing.txt"))
    assert rc == 1 and len(out.splitlines()) == 1 and "no such file" in err
    rc, _, err = run_cli(capsys, "classify", "--threshold", "2", str(txt))
    assert rc == 2 and "threshold" in err


def test_cli_reclassify(sqlite_store: Store, settings: Settings, capsys, monkeypatch) -> None:
    from pipeline.cli import _common

    ids = seed_store(sqlite_store)
    cfg = settings.model_copy(update={"database_url": sqlite_store.url})
    monkeypatch.setattr(_common, "settings", lambda: cfg)
    rc, out, err = run_cli(capsys, "reclassify", "--since", "2026-04-30", "--until", "2026-05-01")
    assert rc == 0, err
    d = json.loads(out)
    assert d["classified"] == 2 and d["relevant"] == 2 and d["stories_refreshed"] == 1
    assert d["until"].startswith("2026-05-02T00:00:00")
    assert rows(sqlite_store).keys() == {ids["p01"], ids["p13"]}
    rc, out, _ = run_cli(capsys, "reclassify", "--all")
    assert rc == 0 and json.loads(out)["classified"] == 4
    rc, _, err = run_cli(capsys, "reclassify", "--since", "2026-05-02", "--until", "2026-05-01")
    assert rc == 2 and "before" in err
    rc, _, err = run_cli(capsys, "reclassify", "--since", "yesterday")
    assert rc == 2 and "ISO" in err
