"""``db``: create or migrate the store."""

from __future__ import annotations

import argparse

from pipeline.cli import _common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="create or migrate the store")
    dsub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dsub.add_parser("upgrade", help="apply migrations up to the newest schema (default)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_upgrade)
    cur = dsub.add_parser("current", help="print the store's schema revision")
    cur.set_defaults(func=_current)
    init = sub.add_parser("init", help="create or migrate the store and load the feed list")
    init.set_defaults(func=_init)


def _upgrade(args: argparse.Namespace) -> int:
    store = _common.open_store(migrate=False)
    store.migrate(args.revision)
    print(f"store at revision {store.current_revision()} ({store.engine.url.render_as_string(hide_password=True)})")
    return 0


def _current(args: argparse.Namespace) -> int:
    store = _common.open_store(migrate=False)
    print(store.current_revision() or "(empty: run `python -m pipeline db upgrade`)")
    return 0


def _init(args: argparse.Namespace) -> int:
    from pipeline import feeds

    settings = _common.settings()
    store = _common.open_store()
    if settings.demo:
        # The demo store holds only the sample feeds, so Airflow's scheduled runs fetch those.
        from pipeline import demo

        specs, source = demo.load_site(f"http://127.0.0.1:{settings.demo_port}").feeds, "the demo site"
    else:
        specs, source = feeds.load_feed_list(settings.feeds_file), str(settings.feeds_file)
    added = feeds.sync_feeds(store, specs)
    print(f"store ready ({store.engine.url.render_as_string(hide_password=True)}); {added} new feeds from {source}")
    return 0
