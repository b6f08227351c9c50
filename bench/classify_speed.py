"""Classifier throughput on one core: articles per second on 600–1,200-word articles.

    python bench/classify_speed.py [--repeat N] [--output PATH]

Corpus (built in memory from real and labelled text, nothing written):

- ``unrelated``: real article bodies from ``../shared/data/article-extraction-benchmark``
  (the gold texts), joined where needed to reach 600–1,200 words;
- ``relations``: the five real seed articles and the relevant articles of the labelled
  development set (``eval/data/classification/dev.jsonl``), joined to 600–1,200 words —
  the worst case, dense with actors and cues;
- ``mixed``: both, half and half (what a feed of Pakistani, Indian and US outlets looks like).

Each pass classifies its corpus three times over, in this one process (the classifier is
single-threaded); of ``--repeat`` passes the best counts (the figure for an idle core)
and the median is reported too (the machine may be shared), in CPU time of the process
and in wall time. Results go to ``bench/results/classify_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.classify import Classifier  # noqa: E402

SHARED = Path(os.environ.get("NEWSMON_SHARED", ROOT.parent / "shared"))
DEV = ROOT / "eval" / "data" / "classification" / "dev.jsonl"
RESULTS = ROOT / "bench" / "results" / "classify_speed.json"
MIN_WORDS, MAX_WORDS = 600, 1200


def _words(text: str) -> int:
    return len(text.split())


def _pack(texts: list[str]) -> list[str]:
    """Join consecutive texts into articles of MIN_WORDS..MAX_WORDS words (longer ones are cut)."""
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for t in texts:
        w = _words(t)
        if w > MAX_WORDS:
            t = " ".join(t.split()[:MAX_WORDS])
            w = MAX_WORDS
        if n + w > MAX_WORDS and n >= MIN_WORDS:
            out.append("\n\n".join(cur))
            cur, n = [], 0
        if n + w > MAX_WORDS:
            cur, n = [], 0
        cur.append(t)
        n += w
        if n >= MIN_WORDS:
            out.append("\n\n".join(cur))
            cur, n = [], 0
    return out


def corpora() -> dict[str, list[tuple[str, str]]]:
    unrelated: list[str] = []
    gt = SHARED / "data" / "article-extraction-benchmark" / "ground-truth.json"
    if gt.is_file():
        data = json.loads(gt.read_text(encoding="utf-8"))
        unrelated = [data[k]["articleBody"] for k in sorted(data)]
    relations: list[str] = [p.read_text(encoding="utf-8") for p in sorted((SHARED / "seeds").glob("*.txt"))]
    if DEV.is_file():
        for line in DEV.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            if d.get("relevant"):
                relations.append(d["title"] + "\n" + d["text"])
    if not unrelated or not relations:
        raise SystemExit("bench data not found (../shared and eval/data/classification/dev.jsonl)")
    u = [("", t) for t in _pack(unrelated)]
    r = [("", t) for t in _pack(relations)]
    mixed = [x for pair in zip(u, r) for x in pair]
    return {"mixed": mixed, "relations": r, "unrelated": u}


def measure(clf: Classifier, docs: list[tuple[str, str]], repeat: int, rounds: int = 3) -> dict:
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            for title, text in docs:
                clf.classify(title, text)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    n = len(docs) * rounds
    words = [_words(t) for _, t in docs]
    return {
        "articles": len(docs),
        "mean_words": round(sum(words) / len(words)),
        "min_words": min(words),
        "max_words": max(words),
        "articles_per_second_cpu": round(n / min(cpu), 1),
        "articles_per_second_cpu_median": round(n / statistics.median(cpu), 1),
        "articles_per_second_wall": round(n / min(wall), 1),
        "ms_per_article_cpu": round(1000 * min(cpu) / n, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="passes per corpus; the best counts")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    clf = Classifier()
    build = time.perf_counter() - t0
    clf.classify("warm-up", "Pakistan and India agreed to talks, the State Department said.")
    results = {name: measure(clf, docs, args.repeat) for name, docs in corpora().items()}
    report = {
        "classifier_version": clf.version,
        "target_articles_per_second": 1000,
        "compile_seconds": round(build, 3),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "corpora": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, r in results.items():
        print(
            f"{name:<10} {r['articles']:>4} articles, {r['mean_words']:>5} words avg: "
            f"{r['articles_per_second_cpu']:>7.0f} articles/s (CPU, best pass; median "
            f"{r['articles_per_second_cpu_median']:.0f}), {r['articles_per_second_wall']:>7.0f} (wall, best)"
        )
    print(f"compile {build:.3f}s; written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
