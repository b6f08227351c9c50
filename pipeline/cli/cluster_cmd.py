"""``cluster``: group text/HTML files into stories; ``stories``: list recent stories from the store."""

from __future__ import annotations

import argparse

from pipeline.cli import _common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="group article files (.txt, .html) into stories and near-duplicate copies",
        description=(
            'Read article files and print JSON: {"stories": [[file, ...], ...], '
            '"duplicates": [[file, duplicate_of_file], ...]}. Every file is in exactly one story. '
            "Files carry no dates, so clustering uses content alone (no time window)."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--explain", action="store_true", help="add per-file decisions (reason, similarity)")
    p.set_defaults(func=_cluster)

    s = sub.add_parser("stories", help="list recent stories with their sources")
    s.add_argument("--limit", type=int, default=20, help="how many stories (default 20)")
    s.add_argument("--relevant", action="store_true", help="only stories classified relevant")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_stories)


def load_document(path: str):
    """A file as a :class:`pipeline.dedupe.Document`: HTML through the extractor, text cleaned lightly."""
    from pipeline import text as T
    from pipeline.dedupe import Document

    content, is_html = _common.read_input_file(path)
    if is_html:
        title, body = _extract_html(content, path)
    else:
        title, body = T.guess_title(content), T.clean_text(content)
    if not body.strip():
        raise _common.CLIError(f"{path}: no article text found")
    return Document(id=path, text=body, title=title)


def _extract_html(html: str, path: str) -> tuple[str, str]:
    from pipeline import extract

    fn = getattr(extract, "extract_html", None)
    if fn is not None:
        art = fn(html)
        return art.title or "", art.text or ""
    import trafilatura

    body = trafilatura.extract(html, favor_precision=True) or ""
    meta = trafilatura.extract_metadata(html)
    return (meta.title if meta and meta.title else ""), body


def _cluster(args: argparse.Namespace) -> int:
    from pipeline.dedupe import cluster_documents

    docs = [load_document(f) for f in args.files]
    result = cluster_documents(docs, _common.settings().dedupe)
    out: dict = {"stories": [list(s) for s in result.stories], "duplicates": [list(d) for d in result.duplicates]}
    if args.explain:
        out["decisions"] = [
            {
                "file": a.id,
                "story": a.story,
                "reason": a.reason,
                "similarity": a.similarity,
                "duplicate_of": a.duplicate_of,
            }
            for a in result.assignments
        ]
    _common.print_json(out, indent=2)
    return 0


def _stories(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from pipeline.store import Article, Story

    if args.limit < 1:
        raise _common.CLIError("--limit must be at least 1")
    store = _common.open_store()
    with store.session() as s:
        q = select(Story).order_by(Story.updated_at.desc(), Story.id.desc()).limit(args.limit)
        if args.relevant:
            q = q.where(Story.relevant.is_(True))
        stories = list(s.scalars(q))
        members: dict[int, list] = {}
        if stories:
            rows = s.execute(
                select(
                    Article.id,
                    Article.story_id,
                    Article.title,
                    Article.outlet,
                    Article.site,
                    Article.url,
                    Article.published_at,
                    Article.fetched_at,
                    Article.duplicate_of_id,
                    Article.dedupe_reason,
                )
                .where(Article.story_id.in_([st.id for st in stories]))
                .order_by(Article.published_at, Article.id)
            ).all()
            for r in rows:
                members.setdefault(r.story_id, []).append(r)
        data = []
        for st in stories:
            data.append(
                {
                    "id": st.id,
                    "title": st.title,
                    "first_published_at": st.first_published_at,
                    "updated_at": st.updated_at,
                    "articles": st.article_count,
                    "outlets": st.outlet_count,
                    "score": round(st.score or 0.0, 3),
                    "relevant": st.relevant,
                    "dyads": st.dyads,
                    "topics": st.topics,
                    "lead_article_id": st.lead_article_id,
                    "sources": [
                        {
                            "article_id": m.id,
                            "outlet": m.outlet or m.site,
                            "title": m.title,
                            "url": m.url,
                            "published_at": m.published_at or m.fetched_at,
                            "duplicate_of": m.duplicate_of_id,
                            "reason": m.dedupe_reason,
                        }
                        for m in members.get(st.id, [])
                    ],
                }
            )
    store.dispose()
    if args.json:
        _common.print_json(data, indent=2)
        return 0
    _print_table(data)
    return 0


def _print_table(data: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not data:
        console.print("no stories yet (run `python -m pipeline ingest` first)")
        return
    table = Table(show_lines=True)
    table.add_column("story", justify="right")
    table.add_column("first published")
    table.add_column("score", justify="right")
    table.add_column("title / sources")
    for st in data:
        when = st["first_published_at"].strftime("%Y-%m-%d %H:%M") if st["first_published_at"] else ""
        lines = [f"[bold]{st['title'] or '(untitled)'}[/bold]  ({st['articles']} articles, {st['outlets']} outlets)"]
        for m in st["sources"]:
            t = m["published_at"].strftime("%m-%d %H:%M") if m["published_at"] else ""
            mark = " (copy)" if m["duplicate_of"] else ""
            lines.append(f"  {t}  {m['outlet'] or '?'}{mark}: {m['title']}")
        score = f"{st['score']:.2f}" + (" ✓" if st["relevant"] else "")
        table.add_row(str(st["id"]), when, score, "\n".join(lines))
    console.print(table)
