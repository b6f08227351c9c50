"""Helpers shared by the CLI commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipeline.config import Settings, get_settings


class CLIError(Exception):
    """An expected failure: printed as one line, exit code ``code``, no traceback."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def settings() -> Settings:
    return get_settings()


def open_store(migrate: bool = True):
    """The configured store, migrated to the current schema."""
    from pipeline.store import Store

    store = Store.from_settings(settings())
    if migrate:
        store.migrate()
    return store


def read_input_file(path: str) -> tuple[str, bool]:
    """Read a .txt, .html or .html.gz file: returns (content, is_html)."""
    import gzip

    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        raw = p.read_bytes()
        if p.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise CLIError(f"{path}: cannot read: {exc}") from exc
    name = p.name.lower().removesuffix(".gz")
    is_html = name.endswith((".html", ".htm", ".xhtml")) or raw.lstrip()[:15].lower().startswith((b"<!doctype", b"<html"))
    return raw.decode("utf-8", errors="replace"), is_html


def print_json(obj: Any, **kwargs: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str, **kwargs) + "\n")
