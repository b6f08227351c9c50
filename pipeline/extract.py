"""Article pages → clean text and metadata. (Contract; implemented by the extraction work.)"""
from __future__ import annotations

from collections.abc import Callable

from pipeline.config import Settings
from pipeline.store import Store
from pipeline.types import ExtractReport


def extract_pending(
    store: Store, settings: Settings, *, entry_ids: list[int] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ExtractReport:
    raise NotImplementedError
