"""Article extraction quality: ours against bare trafilatura, in the same run.

    python -m eval.extraction [--limit N] [--output PATH]

Data: ``../shared/data/article-extraction-benchmark`` (pages ``html/<id>.html.gz``
with the gold article body in ``ground-truth.json``). Both extractors see the
same pages in the same process, interleaved page by page (so a busy machine
slows both alike); the table gives word 4-gram shingle precision, recall and F1
(eval/shingles.py) and pages per second on one core (fastest of ``--rounds``
timings per page). ``bare`` is ``trafilatura.extract(html)`` with its defaults;
``newsmon`` is :func:`pipeline.extract.extract_html` (our trafilatura settings,
metadata, cleanup and language guess). Results go to ``eval/results/extraction.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from eval.shingles import PageScore, Summary, score_page, summarise  # noqa: E402

SHARED = Path(os.environ.get("NEWSMON_SHARED", ROOT.parent / "shared"))
DATASET = SHARED / "data" / "article-extraction-benchmark"
RESULTS = ROOT / "eval" / "results" / "extraction.json"


@dataclass(frozen=True)
class Page:
    id: str
    url: str
    html: str
    gold: str


@dataclass(frozen=True)
class VariantResult:
    name: str
    description: str
    summary: Summary
    seconds: float
    pages_per_second: float
    pages: dict[str, PageScore]


def load_pages(dataset: Path = DATASET, limit: int | None = None) -> list[Page]:
    gold = json.loads((dataset / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(gold)[:limit] if limit else sorted(gold)
    pages = []
    for pid in ids:
        raw = gzip.decompress((dataset / "html" / f"{pid}.html.gz").read_bytes())
        pages.append(Page(pid, gold[pid].get("url", ""), raw.decode("utf-8", errors="replace"), gold[pid].get("articleBody", "")))
    return pages


def bare_trafilatura(page: Page) -> str:
    import trafilatura

    return trafilatura.extract(page.html) or ""


def newsmon(page: Page) -> str:
    from pipeline.extract import extract_html

    return extract_html(page.html, page.url).text


VARIANTS: dict[str, tuple[str, Callable[[Page], str]]] = {
    "bare": ("trafilatura.extract(html), library defaults", bare_trafilatura),
    "newsmon": ("pipeline.extract.extract_html: chosen settings + metadata + clean_text", newsmon),
}


def run_variants(names: list[str], pages: list[Page], rounds: int = 1) -> dict[str, VariantResult]:
    """Run the variants page by page, interleaved, so a busy machine slows all alike.

    With ``rounds`` > 1 each page is timed that many times per variant and the
    fastest time is kept (scores come from the first round).
    """
    fns = {n: VARIANTS[n][1] for n in names}
    for fn in fns.values():
        fn(pages[0])  # warm-up: imports and lazy data outside the timing
    outputs: dict[str, list[str]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    for p in pages:
        best = dict.fromkeys(names, float("inf"))
        for r in range(rounds):
            for n, fn in fns.items():
                t0 = time.perf_counter()
                out = fn(p)
                best[n] = min(best[n], time.perf_counter() - t0)
                if r == 0:
                    outputs[n].append(out)
        for n in names:
            seconds[n] += best[n]
    results = {}
    for n in names:
        scores = {p.id: score_page(p.gold, out) for p, out in zip(pages, outputs[n], strict=True)}
        results[n] = VariantResult(
            n, VARIANTS[n][0], summarise(scores.values()), seconds[n], len(pages) / seconds[n], scores
        )
    return results


def run(
    limit: int | None = None, output: Path | None = RESULTS, dataset: Path = DATASET, rounds: int = 1
) -> dict[str, VariantResult]:
    """Score every variant on the same pages; write ``output`` (unless None) and return the results."""
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    pages = load_pages(dataset, limit)
    results = run_variants(list(VARIANTS), pages, rounds)
    if output is not None:
        import trafilatura

        output.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "dataset": "article-extraction-benchmark (developer split)",
            "pages": len(pages),
            "timing": f"one process, variants interleaved page by page, fastest of {rounds} round(s) per page",
            "metric": "word 4-gram shingles, per-page precision/recall macro-averaged, F1 of the averages",
            "trafilatura": trafilatura.__version__,
            "python": platform.python_version(),
            "variants": {
                name: {
                    "description": r.description,
                    **{k: round(v, 4) for k, v in asdict(r.summary).items() if k != "pages"},
                    "seconds": round(r.seconds, 2),
                    "pages_per_second": round(r.pages_per_second, 1),
                }
                for name, r in results.items()
            },
            "per_page_f1": {
                pid: {name: round(_f1(r.pages[pid]), 4) for name, r in results.items()} for pid in results["bare"].pages
            },
        }
        output.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return results


def _f1(s: PageScore) -> float:
    p, r = s.precision, s.recall
    return 2 * p * r / (p + r) if p + r else 0.0


def format_table(results: dict[str, VariantResult]) -> str:
    lines = [f"{'variant':<10} {'P':>7} {'R':>7} {'F1':>7} {'pages/s':>8}"]
    for name, r in results.items():
        s = r.summary
        lines.append(f"{name:<10} {s.precision:7.4f} {s.recall:7.4f} {s.f1:7.4f} {r.pages_per_second:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.extraction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N pages (by id)")
    parser.add_argument("--rounds", type=int, default=3, help="time each page this many times, keep the fastest")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if not (DATASET / "ground-truth.json").is_file():
        print(f"skipped: benchmark data not found at {DATASET} (clone the project next to ../shared)")
        return 0
    results = run(args.limit, args.output, rounds=max(1, args.rounds))
    n = next(iter(results.values())).summary.pages
    print(f"article-extraction-benchmark, {n} pages, one process, fastest of {args.rounds} round(s) per page")
    print(format_table(results))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
