"""``extract``: article text from pages, files or URLs (one JSON line per input)."""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from pathlib import Path
from typing import Any

from pipeline.cli import _common

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract article text from URLs or files (.html, .html.gz, .txt)",
        description=(
            "Print one JSON line per input: title, text, published, author, site, language and "
            "status. URLs are fetched under the same limits as the pipeline (timeouts, size cap, "
            "no private addresses unless NEWSMON_HTTP__ALLOW_PRIVATE_ADDRESSES=1). A .txt file is "
            "cleaned of page furniture; its first line is the title when it reads like a headline."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="URL|FILE")
    p.set_defaults(func=_extract)


def _read(path: str) -> tuple[bytes, bool]:
    p = Path(path)
    if not p.is_file():
        raise _common.CLIError(f"{path}: no such file")
    try:
        raw = p.read_bytes()
        if p.suffix.lower() == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise _common.CLIError(f"{path}: cannot read: {exc}") from exc
    name = p.name.lower().removesuffix(".gz")
    head = raw.lstrip()[:64].lower()
    is_html = name.endswith((".html", ".htm", ".xhtml")) or head.startswith((b"<!doctype html", b"<html"))
    if not is_html and b"\x00" in raw[:4096]:
        raise _common.CLIError(f"{path}: not a text or HTML file")
    return raw, is_html


def _headline(line: str) -> bool:
    from pipeline.extract import word_count

    line = line.strip()
    return 3 <= word_count(line) <= 25 and not line.endswith((".", ",", ";", ":")) and not line.isupper()


def _from_text(raw: bytes) -> dict[str, Any]:
    from pipeline.extract import clean_text, detect_language

    text = raw.decode("utf-8", errors="replace")
    # The first line once furniture ("Logo", "close", a date) is gone.
    first = clean_text(text).split("\n\n", 1)[0]
    title = first if _headline(first) else ""
    body = clean_text(text, title=title) if title else clean_text(text)
    return {
        "title": title,
        "text": body,
        "published": None,
        "author": "",
        "site": "",
        "language": detect_language(body),
        "status": "ok" if body else "failed",
    }


def _from_article(article: Any) -> dict[str, Any]:
    return {
        "title": article.title,
        "text": article.text,
        "published": article.published.isoformat() if article.published else None,
        "author": article.author,
        "site": article.site,
        "language": article.language,
        "status": article.status.value,
    }


def _fetch(url: str, fetcher: Any) -> dict[str, Any]:
    from pipeline.extract import ACCEPT_HTML, decode_page, extract_html, looks_like_html
    from pipeline.fetcher import FetchError

    try:
        resp = fetcher.get(url, accept=ACCEPT_HTML)
    except FetchError as exc:
        raise _common.CLIError(f"{url}: {exc.message}") from exc
    ctype = resp.headers.get("content-type", "")
    if not resp.content.strip():
        raise _common.CLIError(f"{url}: the page is empty")
    if not looks_like_html(ctype.split(";", 1)[0].strip().lower(), resp.content):
        raise _common.CLIError(f"{url}: not an HTML page ({ctype.split(';', 1)[0] or 'unknown type'})")
    return _from_article(extract_html(decode_page(resp.content, ctype), resp.url))


def _extract(args: argparse.Namespace) -> int:
    from pipeline.extract import extract_html

    fetcher = None
    failures = 0
    try:
        for item in args.inputs:
            try:
                if _URL.match(item):
                    if fetcher is None:
                        from pipeline.fetcher import Fetcher

                        fetcher = Fetcher(_common.settings().http)
                    out = {"url": item, **_fetch(item, fetcher)}
                else:
                    raw, is_html = _read(item)
                    out = {"file": item, **(_from_article(extract_html(raw)) if is_html else _from_text(raw))}
            except _common.CLIError as exc:
                failures += 1
                print(f"error: {exc}", file=sys.stderr)
                continue
            _common.print_json(out)
            sys.stdout.flush()
    finally:
        if fetcher is not None:
            fetcher.close()
    return 2 if failures else 0
