"""The benchmark's markdown table and scaling plot, from ``bench/results/bench.json``.

    .venv/bin/python -m bench.plot [bench/results/bench.json]   # rewrites table.md and scaling.png

The PNG needs matplotlib (``pip install matplotlib==3.11.2``); without it the table
is still written and the plot is skipped with a message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:g}M"
    return f"{n / 1000:g}k" if n >= 1000 else str(n)


def table(res: dict) -> str:
    """The README table: each stage's rate and peak memory, the ratios that have targets."""
    out: list[str] = []
    m = res.get("machine", {})
    wl = res.get("workload", {})
    out.append(
        f"Measured {res.get('generated_at', '')} ({res.get('mode', '')} run) on {m.get('cores', '?')} cores "
        f"(load average at start {', '.join(map(str, m.get('load_average', [])))}), Python {m.get('python', '')}. "
        f"Workload: {wl.get('feeds', '?')} feeds × {res.get('profile', {}).get('entries_per_feed', '?')} entries → "
        f"{wl.get('articles', '?')} article pages (median {wl.get('page_kb', {}).get('median', '?')} KB, "
        f"{wl.get('copies', '?')} syndicated copies, {wl.get('rewrites', '?')} rewrites, "
        f"{wl.get('relevant_articles', '?')} relevant), served from loopback.\n"
    )
    base = res.get("baselines", {})
    tx, fp = base.get("trafilatura", {}), base.get("feedparser", {})
    e2e = res.get("e2e", {})
    par = res.get("parallel", {})
    rows: list[tuple[str, str, str, str]] = []
    for backend, e in e2e.items():
        if "stages" not in e:
            continue
        st = e["stages"]
        tag = f" ({backend})"
        if "fetch" in st:
            rows.append((f"Feeds fetched + parsed + queued, new, alongside page extraction{tag}", f"{_f(st['fetch'].get('feeds_per_second'))} feeds/s "
                         f"({_f(st['fetch'].get('entries_per_second'))} entries/s)", "1 process, threads",
                         _f(st["fetch"].get("peak_rss_mb"))))
        sp = e.get("second_pass", {})
        if sp:
            rows.append((f"Feeds fetched, all 304 Not Modified{tag}", f"{_f(sp.get('feeds_per_second'))} feeds/s",
                         "1 process, threads", "–"))
        if "extract" in st:
            rows.append((f"Pages fetched + extracted + stored (from the first stored feed){tag}", f"{_f(st['extract'].get('pages_per_second'))} pages/s",
                         e.get("processes", ""), _f(st["extract"].get("peak_rss_mb"))))
        if "store_write" in st:
            rows.append((f"Store writes (article, aliases, entries){tag}",
                         f"{_f(st['store_write'].get('articles_per_second'))} articles/s "
                         f"({_f(st['store_write'].get('ms_per_article'), 2)} ms each)", "1", "–"))
        if "dedupe" in st:
            rows.append((f"Dedupe (assign_pending){tag}", f"{_f(st['dedupe'].get('articles_per_second'))} articles/s "
                         f"({_f(st['dedupe'].get('ms_per_article'), 2)} ms each)", "1", _f(st["dedupe"].get("peak_rss_mb"))))
        if "classify" in st:
            rows.append((f"Classification stage (classify_pending){tag}",
                         f"{_f(st['classify'].get('articles_per_second'))} articles/s "
                         f"({_f(st['classify'].get('ms_per_article'), 2)} ms each)", "1",
                         _f(st["classify"].get("peak_rss_mb"))))
        d = e.get("digest", {})
        if d:
            rows.append((f"Digest build + render, {d.get('stories')} stories{tag}",
                         f"{_f(d.get('build_seconds'), 3)} s + {_f(d.get('render_seconds'), 3)} s", "1",
                         _f(d.get("peak_rss_mb"))))
        rows.append((f"**End to end, `run_once`**{tag}", f"**{_f(e.get('articles_per_second'))} articles/s** "
                     f"({_f(e.get('seconds'))} s for {e.get('articles')} articles"
                     + (f"; its round's bare extraction {_f(e['bare_pages_per_second'])} pages/s"
                        if e.get("bare_pages_per_second") else "") + ")", e.get("processes", ""),
                     _f(e.get("peak_rss_mb"))))
    c = res.get("classify")
    if c:
        rows.append(("Classifier alone (workload articles)", f"{_f(c.get('articles_per_second_wall'))} articles/s", "1", "–"))
    if tx:
        rows.append(("Baseline: bare `trafilatura.extract` (defaults)", f"{_f(tx.get('pages_per_second'))} pages/s",
                     "1", _f(tx.get("peak_rss_mb"))))
    if fp:
        rows.append(("Baseline: bare `feedparser.parse`", f"{_f(fp.get('feeds_per_second'))} feeds/s "
                     f"({_f(fp.get('entries_per_second'))} entries/s)", "1", "–"))
    if par:
        rows.append(("Pipeline extraction pool, 1 worker", f"{_f(par['one'].get('pages_per_second'))} pages/s", "1",
                     _f(par["one"].get("peak_rss_mb"))))
        rows.append((f"Pipeline extraction pool, {par['all'].get('workers')} workers",
                     f"{_f(par['all'].get('pages_per_second'))} pages/s (×{_f(par.get('speedup'), 2)})",
                     str(par["all"].get("workers")), _f(par["all"].get("peak_rss_mb"))))
    dg = res.get("digest", {}).get("runs", [])
    for r in dg:
        rows.append((f"Digest build, {_f(res['digest'].get('articles'))}-article store, "
                     f"{_f(res['digest'].get('stories'))} stories ({r.get('store')})",
                     f"{_f(r.get('build_seconds'), 3)} s (render {_f(r.get('render_seconds'), 3)} s)", "1", "–"))
    out.append("| stage | rate | cores | peak RSS (MB) |")
    out.append("| --- | --- | --- | --- |")
    out += [f"| {a} | {b} | {c_} | {d} |" for a, b, c_, d in rows]
    out.append("")

    # Ratios with targets.
    out.append("| check | measured | target |")
    out.append("| --- | --- | --- |")
    for backend, e in e2e.items():
        if "ratio_to_bare_extraction" in e:
            rounds = [r["ratio_to_bare_extraction"] for r in e.get("rounds", [])]
            spread = (f" (median of {len(rounds)} rounds, each against its own bare pass: "
                      f"{', '.join(f'{x:.2f}' for x in rounds)})" if len(rounds) > 1 else "")
            out.append(f"| end to end ÷ bare extraction ({backend}; pipeline on {e.get('processes')}, bare on 1 core) "
                       f"| {_f(e['ratio_to_bare_extraction'], 2)}×{spread} | ≥ 0.8× |")
    if par:
        out.append(f"| parallel extraction speed-up, {par['all'].get('workers')} processes vs 1 | "
                   f"{_f(par.get('speedup'), 2)}× | – |")
    sc = res.get("scaling", {})
    for backend, r in sc.get("ratios", {}).items():
        span = f"{_size(r['from'])} → {_size(r['to'])}"
        paired = r.get("dedupe_rounds", [])
        spread = (f" (best round of each size; round by round, the sizes side by side: "
                  f"{', '.join(f'{x:.2f}' for x in paired)})" if len(paired) > 1 else "")
        out.append(f"| dedupe per article, {span} ({backend}) | {_f(r['dedupe'], 2)}×{spread} | ≤ 1.5× |")
        if "dedupe_with_guid_index" in r:
            out.append(f"| dedupe per article with the proposed `articles.guid` index, {span} ({backend}) | "
                       f"{_f(r['dedupe_with_guid_index'], 2)}× | ≤ 1.5× |")
        if "dedupe_check" in r:
            out.append(f"| dedupe check only (no writes), {span} ({backend}) | {_f(r['dedupe_check'], 2)}× | ≤ 1.5× |")
        out.append(f"| store write per article, {span} ({backend}) | {_f(r['store_write'], 2)}× | ≤ 1.5× |")
        out.append(f"| classification stage per article, {span} ({backend}) | {_f(r['classify_stage'], 2)}× | – |")
    out.append("")
    if sc.get("runs"):
        what_if = any("dedupe_with_guid_index" in r for r in sc["runs"])
        out.append("| store | articles | dedupe ms/article | " + ("… with guid index | " if what_if else "")
                   + "check ms (median) | write ms/article | classify stage ms/article | digest build s "
                   "| dedupe peak RSS MB | store MB | build s |")
        out.append("|" + " --- |" * (11 if what_if else 10))
        for r in sc["runs"]:
            extra = f"{_f(r.get('dedupe_with_guid_index', {}).get('ms_per_article'), 2)} | " if what_if else ""
            out.append(
                f"| {r['backend']} | {_size(r['articles'])} | {_f(r['dedupe']['ms_per_article'], 2)} | {extra}"
                f"{_f(r.get('dedupe_check', {}).get('median_ms'), 2)} | {_f(r['store_write']['ms_per_article'], 2)} | "
                f"{_f(r['classify_stage']['ms_per_article'], 2)} | {_f(r['digest']['build_seconds'], 3)} | "
                f"{_f(r['dedupe'].get('peak_rss_mb'))} | {_f(r.get('store_mb'))} | {_f(r.get('build_seconds'))} |"
            )
        out.append("")
    if res.get("errors"):
        out.append("Errors: " + "; ".join(f"{k}: {v}" for k, v in res["errors"].items()))
        out.append("")
    return "\n".join(out)


def scaling_png(res: dict, path: Path) -> Path | None:
    """Per-article cost against store size (log scale), one line per measurement and backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install matplotlib==3.11.2): scaling.png skipped", file=sys.stderr)
        return None
    runs = res.get("scaling", {}).get("runs", [])
    if not runs:
        return None
    series = [
        ("dedupe (assign_pending)", lambda r: r["dedupe"]["ms_per_article"]),
        ("dedupe, proposed guid index", lambda r: r.get("dedupe_with_guid_index", {}).get("ms_per_article")),
        ("dedupe check, no writes", lambda r: r.get("dedupe_check", {}).get("median_ms")),
        ("store write", lambda r: r["store_write"]["ms_per_article"]),
        ("classification stage", lambda r: r["classify_stage"]["ms_per_article"]),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), dpi=110)
    styles = {"sqlite": "-", "postgresql": "--"}
    colors = ["#1f77b4", "#9467bd", "#17becf", "#d62728", "#2ca02c"]
    ax = axes[0]
    for (name, get), color in zip(series, colors):
        for backend in sorted({r["backend"] for r in runs}):
            pts = sorted((r["articles"], get(r)) for r in runs if r["backend"] == backend and get(r) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(backend, "-"), marker="o", color=color,
                        label=f"{name} ({backend})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("articles in the store")
    ax.set_ylabel("ms per article")
    ax.set_title("Per-article cost against store size")
    ax.grid(True, which="both", alpha=0.3)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 6)  # room for the legend above the lines
    ax.legend(fontsize=6.5, loc="upper left", ncol=2)
    ax = axes[1]
    for backend in sorted({r["backend"] for r in runs}):
        pts = sorted((r["articles"], r["dedupe"].get("peak_rss_mb")) for r in runs if r["backend"] == backend)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(backend, "-"), marker="o",
                label=f"dedupe peak RSS ({backend})")
        pts = sorted((r["articles"], r["store_write"].get("peak_rss_mb")) for r in runs if r["backend"] == backend)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], styles.get(backend, "-"), marker="s",
                label=f"store write peak RSS ({backend})")
    ax.set_xscale("log")
    ax.set_xlabel("articles in the store")
    ax.set_ylabel("MB")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.2)
    ax.set_title("Peak memory (main process)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else RESULTS / "bench.json"
    res = json.loads(src.read_text())
    (src.parent / "table.md").write_text(table(res))
    scaling_png(res, src.parent / "scaling.png")
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
