"""``feeds``: list feeds with their health, add, remove, import and export them."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from pipeline.cli import _common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("feeds", help="list, add, remove, import and export feeds")
    fsub = p.add_subparsers(dest="feeds_command", metavar="ACTION", required=True)

    ls = fsub.add_parser("list", help="feeds with their health (status, last success, failures, next fetch, error)")
    ls.add_argument("--all", action="store_true", help="include disabled feeds")
    ls.add_argument("--failing", action="store_true", help="only feeds whose last fetch failed or that are gone")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_list)

    add = fsub.add_parser("add", help="add a feed (or re-enable and update a known one)")
    add.add_argument("url")
    add.add_argument("--name", help="display name (default: the host name)")
    add.add_argument("--country", default="", help="ISO country code of the outlet, e.g. PK, IN, US")
    add.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    add.add_argument("--site-url", default="", help="the outlet's home page")
    add.set_defaults(func=_add)

    rm = fsub.add_parser("remove", help="disable a feed (its articles are kept)")
    rm.add_argument("feed", help="feed id or URL")
    rm.set_defaults(func=_remove)

    chk = fsub.add_parser("check", help="fetch and parse a feed URL now, storing nothing")
    chk.add_argument("url")
    chk.add_argument("--json", action="store_true", help="print JSON")
    chk.set_defaults(func=_check)

    imp = fsub.add_parser("import", help="add or update feeds from an OPML or TOML feed list")
    imp.add_argument("file")
    imp.set_defaults(func=_import)

    exp = fsub.add_parser("export", help="write the enabled feeds as OPML or TOML")
    exp.add_argument("--format", choices=("opml", "toml"), default=None, help="default: from -o's suffix, else opml")
    exp.add_argument("-o", "--output", help="file to write (default: standard output)")
    exp.add_argument("--all", action="store_true", help="include disabled feeds")
    exp.set_defaults(func=_export)


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    secs = (now - when).total_seconds()
    future = secs < 0
    secs = abs(secs)
    if secs < 90:
        text = f"{secs:.0f}s"
    elif secs < 5400:
        text = f"{secs / 60:.0f}m"
    elif secs < 172800:
        text = f"{secs / 3600:.0f}h"
    else:
        text = f"{secs / 86400:.0f}d"
    return f"in {text}" if future else f"{text} ago"


def _health(f) -> str:  # noqa: ANN001
    if not f.enabled:
        return "disabled"
    if f.gone:
        return "gone"
    if f.last_outcome is None:
        return "new"
    if f.last_outcome == "failed":
        return f"failing ×{f.consecutive_failures}"
    return "ok" + (" (bozo)" if f.last_bozo else "")


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from pipeline.store import Feed, utcnow

    store = _common.open_store()
    with store.session() as s:
        q = select(Feed).order_by(Feed.id)
        if not args.all:
            q = q.where(Feed.enabled.is_(True))
        rows = list(s.scalars(q))
    if args.failing:
        rows = [f for f in rows if f.gone or f.last_outcome in ("failed", "gone")]
    now = utcnow()
    if args.json:
        _common.print_json(
            [
                {
                    "id": f.id, "name": f.name, "url": f.url, "country": f.country, "tags": f.tags,
                    "enabled": f.enabled, "gone": f.gone, "health": _health(f), "last_status": f.last_status,
                    "last_outcome": f.last_outcome, "last_fetch_at": f.last_fetch_at,
                    "last_success_at": f.last_success_at, "last_new_entry_at": f.last_new_entry_at,
                    "consecutive_failures": f.consecutive_failures, "next_fetch_at": f.next_fetch_at,
                    "last_error": f.last_error, "last_bozo": f.last_bozo,
                }  # fmt: skip
                for f in rows
            ]
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wide = console.width >= 130  # narrow terminals: the columns that matter most
    nw = {"no_wrap": True}
    columns = [
        ("id", {"justify": "right", **nw}), ("name", {"max_width": 30 if wide else 22, "overflow": "ellipsis", **nw}),
        ("cc", nw), ("health", nw), ("HTTP", {"justify": "right", **nw}), ("last success", nw),
        ("new entry", nw), ("next fetch", nw), ("last error", {"ratio": 1, "min_width": 20, "overflow": "fold"}),
    ]  # fmt: skip
    keep = {c for c, _ in columns} if wide else {"id", "name", "health", "last success", "next fetch", "last error"}
    table = Table(title=f"{len(rows)} feeds", title_justify="left", expand=True, box=None)
    for col, kw in columns:
        if col in keep:
            table.add_column(col, **kw)
    for f in rows:
        health = _health(f)
        style = "red" if health.startswith(("failing", "gone")) else ("dim" if health == "disabled" else "")
        due = f.next_fetch_at is None or f.next_fetch_at <= now
        cells = {
            "id": str(f.id), "name": f.name, "cc": f.country, "health": health, "HTTP": str(f.last_status or ""),
            "last success": _ago(f.last_success_at, now), "new entry": _ago(f.last_new_entry_at, now),
            "next fetch": "due" if due else _ago(f.next_fetch_at, now),
            "last error": f.last_error or (f"bozo: {f.last_bozo}" if f.last_bozo else ""),
        }  # fmt: skip
        table.add_row(*(cells[c] for c, _ in columns if c in keep), style=style)
    console.print(table)
    return 0


def _add(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from pipeline import feeds
    from pipeline.store import Feed

    try:
        spec = feeds.spec_from_mapping(
            {"url": args.url, "name": args.name, "country": args.country, "tags": args.tag, "site_url": args.site_url},
            args.url,
        )
    except ValueError as exc:
        raise _common.CLIError(str(exc)) from None
    store = _common.open_store()
    added = feeds.sync_feeds(store, [spec])
    with store.session() as s:
        f = s.scalars(select(Feed).where(Feed.url == spec.url)).one()
        if not added:
            f.enabled, f.gone, f.next_fetch_at = True, False, None
        print(f"{'added' if added else 'updated and enabled'} feed {f.id}: {f.name} <{f.url}>")
    return 0


def _find_feed(s, ref: str):  # noqa: ANN001, ANN202
    from sqlalchemy import select

    from pipeline.store import Feed

    f = s.get(Feed, int(ref)) if ref.isdigit() else s.scalars(select(Feed).where(Feed.url == ref.strip())).first()
    if f is None:
        raise _common.CLIError(f"no feed {ref!r} (see `python -m pipeline feeds list --all`)")
    return f


def _remove(args: argparse.Namespace) -> int:
    store = _common.open_store()
    with store.session() as s:
        f = _find_feed(s, args.feed)
        f.enabled = False
        print(f"disabled feed {f.id}: {f.name} <{f.url}> (its articles are kept; `feeds add URL` enables it again)")
    return 0


def _import(args: argparse.Namespace) -> int:
    from pipeline import feeds

    path = Path(args.file)
    if not path.is_file():
        raise _common.CLIError(f"{path}: no such file")
    try:
        specs = feeds.load_feed_list(path)
    except (ValueError, OSError) as exc:
        raise _common.CLIError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    store = _common.open_store()
    added = feeds.sync_feeds(store, specs)
    print(f"{len(specs)} feeds in {path}: {added} added, {len(specs) - added} already known (updated)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from pipeline import feeds
    from pipeline.store import Feed

    fmt = args.format or ("toml" if args.output and args.output.endswith(".toml") else "opml")
    store = _common.open_store()
    with store.session() as s:
        q = select(Feed).order_by(Feed.id)
        if not args.all:
            q = q.where(Feed.enabled.is_(True))
        specs = [feeds.spec_of(f) for f in s.scalars(q)]
    text = feeds.export_toml(specs) if fmt == "toml" else feeds.export_opml(specs)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{len(specs)} feeds written to {args.output} ({fmt})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _check(args: argparse.Namespace) -> int:
    """Exit 0 when the URL gives a usable feed, 1 when it does not."""
    from pipeline import feeds
    from pipeline.fetcher import Fetcher

    settings = _common.settings()
    with Fetcher(settings.http) as fetcher:
        r = feeds.fetch_feed(fetcher, settings, args.url.strip())
    if args.json:
        _common.print_json(
            {
                "url": r.feed_url, "outcome": r.outcome.value, "status": r.status, "error": r.error, "bozo": r.bozo,
                "elapsed": round(r.elapsed, 3), "etag": r.etag, "last_modified": r.last_modified,
                "entries": [
                    {"title": e.title, "link": e.link, "guid": e.guid, "published": e.published, "author": e.author}
                    for e in r.entries
                ],
            }  # fmt: skip
        )
    else:
        status = f" (HTTP {r.status})" if r.status else ""
        print(f"{r.feed_url}: {r.outcome.value}{status} in {r.elapsed:.1f}s")
        if r.error:
            print(f"  error: {r.error}")
        if r.bozo:
            print(f"  malformed but usable: {r.bozo}")
        print(f"  {len(r.entries)} entries" + (", newest:" if r.entries else ""))
        for e in r.entries[:10]:
            when = e.published.strftime("%Y-%m-%d %H:%M") if e.published else "undated"
            print(f"    {when}  {e.title[:90]}")
    return 0 if r.outcome.value == "ok" else 1
