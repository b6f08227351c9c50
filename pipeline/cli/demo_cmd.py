"""``demo serve``: serve the bundled sample feeds and pages on loopback."""

from __future__ import annotations

import argparse
import time

from pipeline.cli import _common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the offline demo site (sample feeds and pages on loopback)")
    dsub = p.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    serve = dsub.add_parser("serve", help="serve the demo site until interrupted")
    serve.add_argument("--port", type=int, help="port (default: settings demo_port, 8765)")
    serve.set_defaults(func=_serve)
    feeds = dsub.add_parser("feeds", help="print the demo feed URLs")
    feeds.set_defaults(func=_feeds)


def _serve(args: argparse.Namespace) -> int:
    from pipeline import demo

    settings = _common.settings()
    if args.port is not None:
        settings = settings.model_copy(update={"demo_port": args.port})
    server = demo.start(settings)
    print(f"demo site on {server.base_url} (Ctrl-C to stop); feeds:")
    for f in server.feeds:
        print(f"  {f.url}  {f.name} ({f.country})")
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def _feeds(args: argparse.Namespace) -> int:
    from pipeline import demo

    site = demo.load_site(f"http://127.0.0.1:{_common.settings().demo_port}")
    for f in site.feeds:
        print(f"{f.url}\t{f.name}\t{f.country}")
    return 0
