"""Feed list, OPML, fetching and parsing feeds. (Contract; implemented by the feeds work.)"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pipeline.config import Settings
from pipeline.store import Store
from pipeline.types import FeedSpec, FetchReport


def load_feed_list(path: Path) -> list[FeedSpec]:
    raise NotImplementedError


def sync_feeds(store: Store, specs: list[FeedSpec]) -> int:
    """Add feeds not yet stored (keyed by URL); returns how many were added."""
    raise NotImplementedError


def due_feed_ids(store: Store, *, now: datetime, force: bool = False) -> list[int]:
    raise NotImplementedError


def fetch_feeds(
    store: Store, settings: Settings, feed_ids: list[int], *, run_id: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> FetchReport:
    """Fetch and parse the feeds; queue new entries (status pending); record each feed's health."""
    raise NotImplementedError
