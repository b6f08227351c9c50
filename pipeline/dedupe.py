"""Same URL, same text, near-duplicate copies, same story. (Contract; implemented by the dedupe work.)"""
from __future__ import annotations

from pipeline.config import Settings
from pipeline.store import Store
from pipeline.types import DedupeReport


def assign_pending(store: Store, settings: Settings, *, article_ids: list[int] | None = None) -> DedupeReport:
    raise NotImplementedError
