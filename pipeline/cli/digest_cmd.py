"""``digest``: build and deliver the daily digest; ``alerts``: mail high-priority stories now."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from pipeline.cli import _common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "digest",
        help="build and deliver the digest (since the last delivered one, or a given period)",
        description=(
            "Build the digest of relevant stories and deliver it through the configured transport "
            "(outbox files or SMTP), exactly once per period. Without --since the period starts where "
            "the last delivered digest ended."
        ),
    )
    p.add_argument("--since", metavar="TIME", help="period start, ISO 8601 (a date or date and time; "
                   "without a zone: digest.timezone)")
    p.add_argument("--until", metavar="TIME", help="period end (exclusive); default: now")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--preview", action="store_true",
                      help="build and show it, write …-preview.eml/.html; record nothing")
    mode.add_argument("--send", action="store_true", help="deliver and record it (the default)")
    p.add_argument("--force", action="store_true", help="send again even if the period was delivered "
                   "(without --since: the latest delivered digest)")
    p.add_argument("--to", action="append", metavar="ADDRESS",
                   help="recipient instead of digest.recipients (repeatable)")
    p.add_argument("--json", action="store_true", help="print the digest's structure (stories, members, ranks) as JSON")
    p.set_defaults(func=_digest)
    a = sub.add_parser("alerts", help="mail high-priority stories now (digest.alerts_enabled)")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    a.set_defaults(func=_alerts)


def _parse_time(value: str | None, tz: str, what: str) -> datetime | None:
    if not value:
        return None
    from zoneinfo import ZoneInfo

    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise _common.CLIError(f"--{what}: not an ISO 8601 date or time: {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return dt


def _digest(args: argparse.Namespace) -> int:
    from pipeline import digest
    from pipeline.types import DigestStatus

    settings = _common.settings()
    tz = settings.digest.timezone
    since, until = _parse_time(args.since, tz, "since"), _parse_time(args.until, tz, "until")
    store = _common.open_store()
    try:
        result = digest.deliver_digest(
            store, settings, since=since, until=until, preview=args.preview, force=args.force, recipients=args.to
        )
    except ValueError as exc:
        raise _common.CLIError(str(exc)) from exc
    except digest.DeliveryFailed as exc:
        if args.json and exc.result is not None:
            _common.print_json(_result_json(exc.result, None))
        raise _common.CLIError(f"{exc}; the next run retries it", code=1) from exc
    plan = result.plan
    if args.json:
        if plan is None and result.status is DigestStatus.ALREADY_DELIVERED:
            # The same period built again gives the digest that was delivered.
            plan = digest.build_digest(store, settings, since=result.period_start, until=result.period_end)
        _common.print_json(_result_json(result, plan))
        return 0
    period = digest.period_label(result.period_start, result.period_end, tz)
    if result.status is DigestStatus.PREVIEW:
        assert plan is not None
        sys.stdout.write(digest.render(plan)[1])
        print(f"preview of {period}: {len(plan.items)} stories; written to {', '.join(result.paths)}; nothing recorded",
              file=sys.stderr)
    elif result.status is DigestStatus.DELIVERED:
        where = f" → {result.paths[0]}" if result.paths else f" to {', '.join(result.recipients)}"
        again = " (the same message again: the earlier attempt's outcome was unknown)" if result.resent else ""
        print(f"delivered digest #{result.digest_id} for {period}: {result.subject} "
              f"via {result.transport}{where}{again}")
        if result.error:
            print(f"warning: {result.error}", file=sys.stderr)
    elif result.status is DigestStatus.ALREADY_DELIVERED:
        print(f"digest #{result.digest_id} for {period} was already delivered; nothing sent (--force sends it again)")
    elif result.status is DigestStatus.EMPTY_SKIPPED:
        print(f"no new stories for {period}; recorded, nothing sent (digest.on_empty = skip)")
    elif result.status is DigestStatus.IN_PROGRESS:
        print(f"digest #{result.digest_id} for {period} is being sent by another run; nothing sent")
    return 0


def _result_json(result, plan) -> dict:
    from pipeline.digest import plan_to_dict

    out = {
        "status": result.status.value,
        "digest_id": result.digest_id,
        "period": {"start": result.period_start.isoformat(), "end": result.period_end.isoformat()},
        "subject": result.subject,
        "message_id": result.message_id,
        "transport": result.transport,
        "recipients": list(result.recipients),
        "paths": list(result.paths),
        "story_count": result.story_count,
        "update_count": result.update_count,
        "resent": result.resent,
        "error": result.error,
    }
    if plan is not None:
        out["digest"] = plan_to_dict(plan)
    return out


def _alerts(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline import digest

    settings = _common.settings()
    if not settings.digest.alerts_enabled:
        raise _common.CLIError("alerts are off (set NEWSMON_DIGEST__ALERTS_ENABLED=true)", code=2)
    report = digest.send_alerts(_common.open_store(), settings)
    if args.json:
        _common.print_json(asdict(report))
    else:
        print(f"alerts: {report.sent} sent, {report.failed} failed, {report.rate_limited} held back by the daily limit "
              f"({report.candidates} candidates)")
        for e in report.errors:
            print(f"error: {e}", file=sys.stderr)
    return 1 if report.failed else 0
