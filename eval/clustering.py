"""Story clustering quality: pairwise precision/recall/F1 against simple baselines, in one run.

Data sets (each used when present):

* ``eval/data/clustering/articles.jsonl`` — our own labelled set (full texts,
  outlets, times; same-topic/different-event traps; near-duplicate labels);
* ``eval/data/clustering_stories.jsonl`` — the larger labelled set (same fields);
* ``../shared/data/uci-news-aggregator-sample/headlines.csv`` — real headlines
  labelled by the aggregator's STORY id (titles only; TIMESTAMP as time).

Scoring: every pair of documents is either in the same labelled story or not;
precision/recall/F1 count the predicted same-story pairs. Baselines, run on the
same data in the same run:

* ``title-jaccard``: single-link clusters of documents whose title word sets have
  Jaccard ≥ 0.5 (inside the time window);
* ``near-duplicate-only``: our MinHash/shingle copy detection alone, every other
  document its own story (what a dedupe-only system would give).

Also reported: near-duplicate precision/recall where labelled, the separating
power (ROC AUC) of each similarity component on labelled pairs, and a sweep of
``story_threshold``. Results go to ``eval/results/clustering.json``.

Run: ``python -m eval.clustering [--no-uci] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import re
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipeline import text as T
from pipeline.config import DedupeSettings
from pipeline.dedupe import DfTable, Document, cluster_documents, featurize, pair_score

ROOT = Path(__file__).resolve().parent.parent
OWN_SET = ROOT / "eval" / "data" / "clustering" / "articles.jsonl"
LARGE_SET = ROOT / "eval" / "data" / "clustering_stories.jsonl"
UCI = ROOT.parent / "shared" / "data" / "uci-news-aggregator-sample" / "headlines.csv"
OUT = ROOT / "eval" / "results" / "clustering.json"
THRESHOLDS = [0.2, 0.25, 0.3, 0.325, 0.35, 0.375, 0.4, 0.45]
TIME_BONUSES = [0.0, 0.05, 0.1]


def _parse_time(v: str | None) -> datetime | None:
    if not v:
        return None
    d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=timezone.utc)


def _readme_copies(path: Path) -> dict[str, str]:
    """Near-copy pairs a data set's README lists as "sNNN/sNNN are one ... copy"."""
    readme = path.with_name(path.stem.split("_")[0] + "_README.md")
    if not readme.is_file():
        return {}
    return {b: a for a, b in re.findall(r"(s\d+)/(s\d+) are one", readme.read_text(encoding="utf-8"))}


def load_jsonl(path: Path) -> tuple[list[Document], dict[str, str], dict[str, str]]:
    """Documents, their story labels and labelled duplicates (copy → original)."""
    docs, labels, dups = [], {}, _readme_copies(path)
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        did = str(r["id"])
        docs.append(
            Document(
                id=did,
                text=T.clean_text(r.get("text") or ""),
                title=r.get("title") or "",
                published=_parse_time(r.get("published")),
                outlet=r.get("outlet") or "",
            )
        )
        labels[did] = str(r["story"])
        if r.get("duplicate_of"):
            dups[did] = str(r["duplicate_of"])
    return docs, labels, dups


def load_uci(path: Path) -> tuple[list[Document], dict[str, str], dict[str, str]]:
    docs, labels = [], {}
    with path.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            at = datetime.fromtimestamp(int(r["TIMESTAMP"]) / 1000, tz=timezone.utc)
            docs.append(Document(id=r["ID"], text=r["TITLE"], title=r["TITLE"], published=at, outlet=r["PUBLISHER"]))
            labels[r["ID"]] = r["STORY"]
    return docs, labels, {}


def pairwise(pred: dict[str, int], gold: dict[str, str]) -> dict[str, float]:
    """Pairwise precision/recall/F1 of same-story pairs (counted from cluster sizes, no pair loop)."""

    def pairs(groups) -> int:
        return sum(n * (n - 1) // 2 for n in groups)

    by_pred, by_gold, by_both = defaultdict(int), defaultdict(int), defaultdict(int)
    for d, g in gold.items():
        by_pred[pred[d]] += 1
        by_gold[g] += 1
        by_both[(pred[d], g)] += 1
    tp = pairs(by_both.values())
    pp, gp = pairs(by_pred.values()), pairs(by_gold.values())
    p = tp / pp if pp else 1.0
    r = tp / gp if gp else 1.0
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
        "predicted_stories": len(by_pred),
        "true_stories": len(by_gold),
    }


def _union_find(n: int):
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    return find, union


def baseline_title_jaccard(docs: list[Document], window_hours: float, threshold: float = 0.5) -> dict[str, int]:
    """Single-link clusters of title word-set Jaccard ≥ ``threshold`` inside the time window."""
    sets = [set(T.words(d.title or d.text.split("\n", 1)[0])) - T.STOPWORDS for d in docs]
    find, union = _union_find(len(docs))
    inverted: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sets):
        for w in s:
            inverted[w].append(i)
    w = timedelta(hours=window_hours)
    for i, s in enumerate(sets):
        seen: set[int] = set()
        for t in s:
            seen.update(j for j in inverted[t] if j < i)
        for j in seen:
            if docs[i].published and docs[j].published and abs(docs[i].published - docs[j].published) > w:
                continue
            inter = len(s & sets[j])
            if inter and inter / len(s | sets[j]) >= threshold:
                union(i, j)
    return {d.id: find(i) for i, d in enumerate(docs)}


def baseline_near_duplicates(docs: list[Document], cfg: DedupeSettings) -> dict[str, int]:
    """Copy detection alone: a document is in its original's story, else alone."""
    copy_only = cfg.model_copy(update={"story_threshold": 2.0})  # no score reaches 2: never a story link
    res = cluster_documents(docs, copy_only)
    return {a.id: a.story for a in res.assignments}


def duplicate_quality(result, dups: dict[str, str], labels: dict[str, str]) -> dict[str, float]:
    found = {a.id: a.duplicate_of for a in result.assignments if a.duplicate_of}
    # A labelled copy counts as found when it is marked a copy of its original (either direction).
    tp = sum(1 for c, o in dups.items() if found.get(c) == o or found.get(o) == c)
    correct_pred = sum(1 for c, o in found.items() if dups.get(c) == o or dups.get(o) == c)
    return {
        "labelled": len(dups),
        "predicted": len(found),
        "recall": round(tp / len(dups), 4) if dups else None,
        "precision": round(correct_pred / len(found), 4) if found else None,
        "false_copies": sorted(f"{c}->{o}" for c, o in found.items() if not (dups.get(c) == o or dups.get(o) == c)),
    }


def near_duplicate_margin(docs: list[Document], labels: dict[str, str], dups: dict[str, str], cfg: DedupeSettings):
    """Shingle Jaccard and containment of labelled copies against every other pair of the same story.

    The copy thresholds must sit between the lowest labelled copy and the highest
    same-story pair that is a separate write-up.
    """
    if not dups:
        return None
    feats = {d.id: featurize(d.title, d.text, cfg.shingle_size) for d in docs}

    def sims(a: str, b: str) -> tuple[float, float]:
        x, y = feats[a].shingles, feats[b].shingles
        inter = len(x & y)
        return inter / max(1, len(x | y)), inter / max(1, min(len(x), len(y)))

    copies = {frozenset(p) for p in dups.items()}
    copy_sims = [sims(a, b) for a, b in dups.items()]
    other = [
        sims(a.id, b.id)
        for a, b in itertools.combinations(docs, 2)
        if labels[a.id] == labels[b.id] and frozenset((a.id, b.id)) not in copies
    ]
    return {
        "copies": len(copy_sims),
        "copy_jaccard_min": round(min(j for j, _ in copy_sims), 3),
        "copy_containment_min": round(min(c for _, c in copy_sims), 3),
        "rewrite_jaccard_max": round(max((j for j, _ in other), default=0.0), 3),
        "rewrite_containment_max": round(max((c for _, c in other), default=0.0), 3),
    }


def _auc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    ranked = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    # Mann-Whitney U with average ranks for ties.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2
        rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return round(u / (len(pos) * len(neg)), 4)


def component_separation(docs: list[Document], labels: dict[str, str], cfg: DedupeSettings, max_pairs: int = 200_000):
    """ROC AUC of each similarity component: same-story pairs vs other pairs inside the time window.

    "hard" negatives are pairs of different stories that share at least one proper name
    (the same-topic traps); the ordinary negatives are every other different-story pair.
    """
    feats = [featurize(d.title, d.text, cfg.shingle_size) for d in docs]
    df = DfTable()
    for f in feats:
        df.add(f)
    comps = ("score", "quote", "names", "content", "time", "score+time")
    pos = {c: [] for c in comps}
    neg = {c: [] for c in comps}
    hard = {c: [] for c in comps}
    w = timedelta(hours=cfg.story_window_hours)
    n = 0
    for i, j in itertools.combinations(range(len(docs)), 2):
        a, b = docs[i], docs[j]
        if a.published and b.published and abs(a.published - b.published) > w:
            continue
        n += 1
        if n > max_pairs:
            break
        p = pair_score(feats[i], feats[j], df)
        hours = abs((a.published - b.published).total_seconds()) / 3600 if a.published and b.published else 0.0
        close = max(0.0, 1.0 - hours / cfg.time_bonus_hours)
        values = {
            "score": p.score,
            "quote": p.quote,
            "names": p.names,
            "content": p.content,
            "time": close,
            "score+time": p.score + cfg.time_bonus * close,
        }
        same = labels[a.id] == labels[b.id]
        target = pos if same else neg
        for c in comps:
            target[c].append(values[c])
        if not same and set(feats[i].names) & set(feats[j].names):
            for c in comps:
                hard[c].append(values[c])
    return {
        "pairs": {
            "same_story": len(pos["score"]),
            "different": len(neg["score"]),
            "hard_different": len(hard["score"]),
        },
        "auc_all": {c: _auc(pos[c], neg[c]) for c in comps},
        "auc_hard": {c: _auc(pos[c], hard[c]) for c in comps},
    }


def evaluate(name: str, docs, labels, dups, cfg: DedupeSettings, sweep: bool = True, components: bool = True) -> dict:
    t0 = time.perf_counter()
    res = cluster_documents(docs, cfg)
    elapsed = time.perf_counter() - t0
    ours = pairwise(res.story_of(), labels)
    out: dict = {
        "documents": len(docs),
        "stories": len(set(labels.values())),
        "ours": ours,
        "seconds": round(elapsed, 2),
        "baselines": {
            "title-jaccard>=0.5": pairwise(baseline_title_jaccard(docs, cfg.story_window_hours), labels),
            "near-duplicate-only": pairwise(baseline_near_duplicates(docs, cfg), labels),
        },
    }
    if dups:
        out["near_duplicates"] = duplicate_quality(res, dups, labels)
        out["near_duplicate_margin"] = near_duplicate_margin(docs, labels, dups, cfg)
    if sweep:
        out["threshold_sweep"] = {
            f"threshold={t} time_bonus={b}": pairwise(
                cluster_documents(docs, cfg.model_copy(update={"story_threshold": t, "time_bonus": b})).story_of(),
                labels,
            )
            for b in TIME_BONUSES
            for t in THRESHOLDS
        }
    if components:
        out["components"] = component_separation(docs, labels, cfg)
    # Which labelled stories were split or merged, for reading the result.
    pred = res.story_of()
    gold_to_pred = defaultdict(set)
    pred_to_gold = defaultdict(set)
    for d, g in labels.items():
        gold_to_pred[g].add(pred[d])
        pred_to_gold[pred[d]].add(g)
    out["split_stories"] = sorted(g for g, ps in gold_to_pred.items() if len(ps) > 1)[:50]
    out["merged_stories"] = sorted(sorted(gs) for gs in pred_to_gold.values() if len(gs) > 1)[:50]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-uci", action="store_true", help="skip the UCI headline sample")
    ap.add_argument("--no-sweep", action="store_true", help="skip the threshold sweep (faster)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    cfg = DedupeSettings()
    results: dict = {
        "settings": cfg.model_dump(),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "datasets": {},
    }
    sets = [("own", OWN_SET, load_jsonl), ("large", LARGE_SET, load_jsonl)]
    if not args.no_uci:
        sets.append(("uci-headlines", UCI, load_uci))
    for name, path, loader in sets:
        if not path.exists():
            print(f"{name}: {path} not found, skipped", file=sys.stderr)
            continue
        docs, labels, dups = loader(path)
        big = len(docs) > 2000
        r = evaluate(name, docs, labels, dups, cfg, sweep=not args.no_sweep, components=True)
        r["source"] = str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path)
        results["datasets"][name] = r
        b = r["baselines"]
        print(
            f"{name:14s} n={len(docs):5d} ours P={r['ours']['precision']:.3f} R={r['ours']['recall']:.3f} "
            f"F1={r['ours']['f1']:.3f} | title-jaccard F1={b['title-jaccard>=0.5']['f1']:.3f} "
            f"| near-dup-only F1={b['near-duplicate-only']['f1']:.3f}"
            + (" (large set: sweep included)" if big and not args.no_sweep else "")
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
