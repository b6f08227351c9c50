"""Relevance to US–Pakistan–India relations. (Contract; implemented by the classification work.)"""
from __future__ import annotations

from pipeline.config import Settings
from pipeline.store import Store
from pipeline.types import ClassifyReport


def classify_pending(store: Store, settings: Settings, *, article_ids: list[int] | None = None) -> ClassifyReport:
    raise NotImplementedError
