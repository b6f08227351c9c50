"""``classify``: relevance of files; ``reclassify``: redo stored decisions for a date range."""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from pipeline.cli import _common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="score text or HTML files for relevance to US–Pakistan–India relations",
        description=(
            "Print one JSON line per file: file, relevant, score, dyads, topics and evidence (the "
            "sentences and terms behind the decision). HTML is reduced to its article text first. "
            "The watch profile and threshold come from the settings unless given here."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".txt, .html or .html.gz files")
    p.add_argument("--profile", type=Path, help="watch profile (TOML) to use instead of the configured one")
    p.add_argument("--threshold", type=float, help="relevance threshold (0..1) instead of the configured one")
    p.add_argument("--explain", action="store_true", help="also print the score's features and the classifier version")
    p.set_defaults(func=_classify)

    r = sub.add_parser(
        "reclassify",
        help="reclassify stored articles published in a date range (after a rules or profile change)",
        description=(
            "Reclassify the stored articles published (or, undated, fetched) in [--since, --until) "
            "and refresh their stories. Only decisions of another classifier version are redone "
            "unless --all is given. A date without a time means the whole day: --since 2025-05-01 "
            "--until 2025-05-31 covers May. Times without a zone are UTC."
        ),
    )
    r.add_argument("--since", help="start (ISO date or date-time), inclusive")
    r.add_argument("--until", help="end (ISO date or date-time); a date includes that whole day")
    r.add_argument("--all", action="store_true", help="reclassify even articles already at the current version")
    r.set_defaults(func=_reclassify)


def _parse(value: str) -> tuple[datetime, bool]:
    value = value.strip()
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime.combine(d, time(0), tzinfo=timezone.utc), True
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _common.CLIError(f"not an ISO 8601 date or date-time: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc), False


def _when(value: str | None) -> datetime | None:
    return None if value is None else _parse(value)[0]


def _until(value: str | None) -> datetime | None:
    if value is None:
        return None
    dt, date_only = _parse(value)
    return dt + timedelta(days=1) if date_only else dt


def _classifier(args: argparse.Namespace):
    from pipeline.classify import DEFAULT_PROFILE_FILE, Classifier, WatchProfile

    settings = _common.settings()
    threshold = args.threshold if args.threshold is not None else settings.classify.threshold
    if not 0.0 <= threshold <= 1.0:
        raise _common.CLIError(f"--threshold must be within [0, 1], got {threshold}")
    path = args.profile or settings.classify.profile_file or DEFAULT_PROFILE_FILE
    if not Path(path).is_file():
        raise _common.CLIError(f"watch profile {path}: no such file")
    try:
        profile = WatchProfile.load(path)
    except ValueError as exc:
        raise _common.CLIError(str(exc)) from exc
    if args.threshold is not None:
        # An explicit --threshold wins over the profile's.
        from dataclasses import replace

        profile = replace(profile, threshold=None)
    return Classifier(threshold=threshold, profile=profile)


def _article(path: str) -> tuple[str, str]:
    content, is_html = _common.read_input_file(path)
    if not is_html:
        return "", content
    try:
        from pipeline.extract import extract_html
    except ImportError:
        extract_html = None
    if extract_html is not None:
        art = extract_html(content, "")
        return art.title, art.text
    import lxml.html

    tree = lxml.html.fromstring(content)
    for bad in tree.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    title = (tree.findtext(".//title") or "").strip()
    return title, tree.text_content()


def _classify(args: argparse.Namespace) -> int:
    clf = _classifier(args)
    failed = 0
    for path in args.files:
        try:
            title, text = _article(path)
        except _common.CLIError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        a = clf.analyse(title, text)
        c = a.classification
        out = {
            "file": path,
            "relevant": c.relevant,
            "score": c.score,
            "dyads": list(c.dyads),
            "topics": list(c.topics),
            "evidence": [{"sentence": e.sentence, "terms": list(e.terms), "weight": e.weight} for e in c.evidence],
        }
        if args.explain:
            out["version"] = c.version
            out["threshold"] = clf.threshold
            out["features"] = a.features
            out["dyad_evidence"] = a.dyad_evidence
            out["topic_scores"] = a.topic_scores
        _common.print_json(out)
    return 1 if failed else 0


def _reclassify(args: argparse.Namespace) -> int:
    from pipeline.classify import Classifier, reclassify

    since, until = _when(args.since), _until(args.until)
    if since and until and since >= until:
        raise _common.CLIError("--since must be before --until")
    settings = _common.settings()
    try:
        version = Classifier.from_settings(settings).version
    except ValueError as exc:
        raise _common.CLIError(str(exc)) from exc
    store = _common.open_store()
    report = reclassify(store, settings, since=since, until=until, force=args.all)
    _common.print_json(
        {
            "classified": report.classified,
            "relevant": report.relevant,
            "stories_refreshed": len(report.story_ids),
            "version": version,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        }
    )
    return 0
