"""Relevance classification quality: ours against a naive baseline, in the same run.

    python -m eval.classification [--threshold T] [--output PATH] [--errors]

Baseline: an article is relevant iff it names at least two of the three countries
(country names and demonyms, e.g. "India"/"Indian", "Pakistan"/"Pakistani",
"United States"/"US"/"American"); its dyads are the pairs it names.

Labelled sets (each reported on its own, then pooled):

- ``dev``: ``eval/data/classification/dev.jsonl`` (see ``GUIDELINE.md`` there): written
  articles, about half hard negatives, with dyad and topic labels.
- ``seeds``: the five real articles in ``../shared/seeds`` (all relevant; US-PK in all,
  IN-PK in 000-002 — only those dyads are checked).
- ``extraction-benchmark``: the 120 real article bodies of
  ``../shared/data/article-extraction-benchmark``; labelled by hand: all unrelated to
  the relations except one (Indians deported from the US: relevant, US-IN).
- ``uci-headlines``: 4,157 real 2014 business/tech/entertainment/health headlines of
  ``../shared/data/uci-news-aggregator-sample`` (title only); all negatives (the few
  that name India are about an actress).
- ``fixtures``: the unit-test examples in ``tests/fixtures/classify`` (written alongside
  the rules, so not an independent measurement; shown for completeness).

Reported per set: precision, recall, F1 (relevance), false-positive rate, dyad exact-set
accuracy and micro P/R over dyads (true positives that both systems call relevant are
scored on the gold dyads), topic micro P/R where labelled, and for ``dev`` a threshold
sweep and errors by kind. Results go to ``eval/results/classification.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from pipeline.classify import DYADS, Classifier  # noqa: E402

SHARED = Path(os.environ.get("NEWSMON_SHARED", ROOT.parent / "shared"))
DEV = ROOT / "eval" / "data" / "classification" / "dev.jsonl"
FIXTURES = ROOT / "tests" / "fixtures" / "classify" / "cases.jsonl"
RESULTS = ROOT / "eval" / "results" / "classification.json"

# Hand labels for the extraction-benchmark bodies that are about the relations (by id
# prefix); every other body there is unrelated (checked: only four name India at all).
BENCHMARK_POSITIVES = {"5f9c5ed5d64d": ["US-IN"]}  # Indians deported from the US
SEED_DYADS = {"000": ["US-PK", "IN-PK"], "001": ["US-PK", "IN-PK"], "002": ["US-PK", "IN-PK"],
              "003": ["US-PK"], "004": ["US-PK"]}  # fmt: skip


@dataclass
class Example:
    id: str
    title: str
    text: str
    relevant: bool
    dyads: list[str] = field(default_factory=list)
    topics: list[str] | None = None  # None = not labelled
    kind: str = ""
    dyads_partial: bool = False  # gold dyads are a required subset, not the full set


# ---------------------------------------------------------------- data sets


def load_jsonl(path: Path) -> list[Example]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        d = json.loads(line)
        out.append(
            Example(
                id=str(d.get("id", n)),
                title=d.get("title", ""),
                text=d.get("text", ""),
                relevant=bool(d["relevant"]),
                dyads=list(d.get("dyads") or []),
                topics=list(d["topics"]) if "topics" in d and d["topics"] is not None else None,
                kind=d.get("kind", "positive" if d["relevant"] else "negative"),
            )
        )
    return out


def load_seeds() -> list[Example]:
    out = []
    for p in sorted((SHARED / "seeds").glob("*.txt")):
        out.append(
            Example(p.stem, "", p.read_text(encoding="utf-8"), True, SEED_DYADS.get(p.stem[:3], []),
                    kind="positive", dyads_partial=True)  # fmt: skip
        )
    return out


def load_benchmark() -> list[Example]:
    gt = json.loads((SHARED / "data" / "article-extraction-benchmark" / "ground-truth.json").read_text("utf-8"))
    out = []
    for pid in sorted(gt):
        dy = BENCHMARK_POSITIVES.get(pid[:12])
        out.append(Example(pid[:12], "", gt[pid]["articleBody"], dy is not None, dy or [],
                           kind="positive" if dy else "unrelated"))  # fmt: skip
    return out


def load_headlines() -> list[Example]:
    path = SHARED / "data" / "uci-news-aggregator-sample" / "headlines.csv"
    kinds = {"b": "business", "t": "tech", "e": "entertainment", "m": "health"}
    with path.open(encoding="utf-8", newline="") as f:
        return [Example(r["ID"], r["TITLE"], "", False, kind=kinds.get(r["CATEGORY"], r["CATEGORY"]))
                for r in csv.DictReader(f)]  # fmt: skip


def load_sets(dev: Path = DEV) -> dict[str, list[Example]]:
    sets: dict[str, list[Example]] = {}
    if dev.is_file():
        sets["dev"] = load_jsonl(dev)
    if (SHARED / "seeds").is_dir():
        sets["seeds"] = load_seeds()
    if (SHARED / "data" / "article-extraction-benchmark").is_dir():
        sets["extraction-benchmark"] = load_benchmark()
    if (SHARED / "data" / "uci-news-aggregator-sample").is_dir():
        sets["uci-headlines"] = load_headlines()
    if FIXTURES.is_file():
        sets["fixtures"] = load_jsonl(FIXTURES)
    return sets


# ---------------------------------------------------------------- systems

_BASELINE = {
    "US": re.compile(r"\b(?:United States|U\.S\.(?:A\.)?|US|USA|America|Americans?)\b"),
    "IN": re.compile(r"\b(?:India|Indians?)\b"),
    "PK": re.compile(r"\b(?:Pakistan|Pakistanis?)\b"),
}


@dataclass(frozen=True)
class Prediction:
    relevant: bool
    score: float
    dyads: tuple[str, ...]
    topics: tuple[str, ...] = ()


def baseline(title: str, text: str) -> Prediction:
    doc = f"{title}\n{text}"
    named = [c for c, rx in _BASELINE.items() if rx.search(doc)]
    dyads = tuple(d for d in DYADS if all(c in named for c in d.split("-")))
    return Prediction(len(named) >= 2, len(named) / 3, dyads)


def ours(clf: Classifier) -> Callable[[str, str], Prediction]:
    def predict(title: str, text: str) -> Prediction:
        a = clf.analyse(title, text).classification
        return Prediction(a.relevant, a.score, a.dyads, a.topics)

    return predict


# ---------------------------------------------------------------- metrics


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f = 2 * p * r / (p + r) if p is not None and r is not None and p + r else (0.0 if p is not None and r is not None else None)
    return {"precision": _r(p), "recall": _r(r), "f1": _r(f)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def score_set(examples: list[Example], preds: list[Prediction]) -> dict:
    tp = fp = fn = tn = 0
    dyad_exact = dyad_n = 0
    dtp = dfp = dfn = 0
    ttp = tfp = tfn = 0
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for ex, pr in zip(examples, preds):
        k = by_kind[ex.kind or ("positive" if ex.relevant else "negative")]
        k["n"] += 1
        if ex.relevant and pr.relevant:
            tp += 1
            k["correct"] += 1
            gold, got = set(ex.dyads), set(pr.dyads)
            if ex.dyads_partial:
                got_checked = got & set(DYADS)
                dyad_n += 1
                dyad_exact += gold <= got_checked
                dtp += len(gold & got)
                dfn += len(gold - got)
            elif gold:
                dyad_n += 1
                dyad_exact += gold == got
                dtp += len(gold & got)
                dfp += len(got - gold)
                dfn += len(gold - got)
            if ex.topics is not None:
                tg, tt = set(ex.topics), set(pr.topics)
                ttp += len(tg & tt)
                tfp += len(tt - tg)
                tfn += len(tg - tt)
        elif ex.relevant:
            fn += 1
        elif pr.relevant:
            fp += 1
        else:
            tn += 1
            k["correct"] += 1
    out = {"n": len(examples), "positives": tp + fn, "negatives": fp + tn, "tp": tp, "fp": fp, "fn": fn, "tn": tn}
    out.update(_prf(tp, fp, fn))
    out["false_positive_rate"] = _r(fp / (fp + tn)) if fp + tn else None
    out["dyads"] = {
        "scored": dyad_n,
        "exact_set_accuracy": _r(dyad_exact / dyad_n) if dyad_n else None,
        **{f"micro_{k}": v for k, v in _prf(dtp, dfp, dfn).items()},
    }
    if ttp + tfp + tfn:
        out["topics"] = {f"micro_{k}": v for k, v in _prf(ttp, tfp, tfn).items()}
    out["by_kind"] = {k: {"n": v["n"], "correct": v["correct"]} for k, v in sorted(by_kind.items())}
    return out


def sweep(examples: list[Example], scores: list[float], thresholds: Iterable[float]) -> list[dict]:
    rows = []
    for t in thresholds:
        tp = sum(1 for e, s in zip(examples, scores) if e.relevant and s >= t)
        fp = sum(1 for e, s in zip(examples, scores) if not e.relevant and s >= t)
        fn = sum(1 for e, s in zip(examples, scores) if e.relevant and s < t)
        rows.append({"threshold": t, **_prf(tp, fp, fn)})
    return rows


# ---------------------------------------------------------------- run


def run(dev: Path = DEV, threshold: float | None = None, output: Path | None = RESULTS, errors: bool = False) -> dict:
    clf = Classifier(threshold=0.5 if threshold is None else threshold)
    systems = {"newsmon": ours(clf), "baseline": baseline}
    sets = load_sets(dev)
    if not sets:
        raise SystemExit("no labelled data found (eval/data/classification/dev.jsonl, ../shared)")
    report: dict = {
        "classifier_version": clf.version,
        "threshold": clf.threshold,
        "baseline": "relevant iff the article names at least two of the three countries",
        "sets": {},
    }
    pooled: dict[str, tuple[list[Example], list[Prediction]]] = {s: ([], []) for s in systems}
    timing: dict[str, float] = {}
    for set_name, examples in sets.items():
        report["sets"][set_name] = {}
        for sys_name, predict in systems.items():
            t0 = time.perf_counter()
            preds = [predict(e.title, e.text) for e in examples]
            timing[sys_name] = timing.get(sys_name, 0.0) + time.perf_counter() - t0
            report["sets"][set_name][sys_name] = score_set(examples, preds)
            if set_name != "fixtures":
                pooled[sys_name][0].extend(examples)
                pooled[sys_name][1].extend(preds)
            if set_name == "dev" and sys_name == "newsmon":
                report["dev_threshold_sweep"] = sweep(
                    examples, [p.score for p in preds], [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
                )
            if errors and sys_name == "newsmon":
                for e, p in zip(examples, preds):
                    if e.relevant != p.relevant or (e.relevant and p.relevant and not e.dyads_partial and e.dyads and set(e.dyads) != set(p.dyads)):
                        what = "FN" if e.relevant and not p.relevant else "FP" if p.relevant and not e.relevant else "DY"
                        print(f"{what} {set_name}/{e.id} [{e.kind}] score={p.score:.3f} gold={e.dyads} got={list(p.dyads)} | {e.title[:90]}", file=sys.stderr)
    report["pooled_without_fixtures"] = {s: score_set(*pooled[s]) for s in systems}
    report["seconds"] = {s: round(t, 3) for s, t in timing.items()}
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def format_table(report: dict) -> str:
    lines = [f"classifier {report['classifier_version']}  threshold {report['threshold']}", ""]
    head = f"{'set':<22}{'system':<10}{'n':>6}{'pos':>5}{'P':>8}{'R':>8}{'F1':>8}{'FPR':>8}{'dyad=':>8}{'dyF1':>8}"
    lines.append(head)
    lines.append("-" * len(head))

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = [(k, v) for k, v in report["sets"].items()] + [("POOLED (no fixtures)", report["pooled_without_fixtures"])]
    for set_name, systems in rows:
        for sys_name, m in systems.items():
            lines.append(
                f"{set_name:<22}{sys_name:<10}{m['n']:>6}{m['positives']:>5}{fmt(m['precision']):>8}{fmt(m['recall']):>8}"
                f"{fmt(m['f1']):>8}{fmt(m['false_positive_rate']):>8}{fmt(m['dyads']['exact_set_accuracy']):>8}"
                f"{fmt(m['dyads']['micro_f1']):>8}"
            )
    if "dev_threshold_sweep" in report:
        lines += ["", "dev threshold sweep (newsmon): " + "  ".join(
            f"{r['threshold']}: P={fmt(r['precision'])} R={fmt(r['recall'])}" for r in report["dev_threshold_sweep"])]
    dev = report["sets"].get("dev", {}).get("newsmon")
    if dev:
        lines += ["", "dev by kind (newsmon correct/n): " + ", ".join(
            f"{k} {v['correct']}/{v['n']}" for k, v in dev["by_kind"].items())]
        if "topics" in dev:
            t = dev["topics"]
            lines.append(f"dev topics micro P={fmt(t['micro_precision'])} R={fmt(t['micro_recall'])} F1={fmt(t['micro_f1'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", type=Path, default=DEV, help="labelled development set (JSON lines)")
    ap.add_argument("--threshold", type=float, default=None, help="relevance threshold (default 0.5)")
    ap.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    ap.add_argument("--errors", action="store_true", help="list misclassified examples on stderr")
    args = ap.parse_args(argv)
    report = run(args.dev, args.threshold, args.output, args.errors)
    print(format_table(report))
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
