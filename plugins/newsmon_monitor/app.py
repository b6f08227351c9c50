"""The News Monitor web view: a FastAPI app mounted by the Airflow API server.

Airflow serves a plugin's FastAPI app *without* its own authentication, so every
route here depends on :func:`require_user`, which validates the caller's Airflow
JWT (the UI's ``_token`` cookie, or ``Authorization: Bearer`` from ``POST
/auth/token``) with the configured auth manager and checks read access to the
website. Pages are rendered on the server with Jinja2 (autoescaped); the chart is
inline SVG, so the view needs nothing from outside the API server.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
COOKIE = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN


class NotAuthenticated(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


app = FastAPI(
    title="News Monitor",
    description="Stories, feed health and digests of the newsmon pipeline.",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


# ---------------------------------------------------------------- authentication


def _token_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(COOKIE) or None


async def require_user(request: Request) -> Any:
    """The Airflow user behind this request; refuses anonymous and unauthorised callers."""
    from jwt import InvalidTokenError

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView

    token = _token_from(request)
    if not token:
        raise NotAuthenticated("Not authenticated")
    manager = get_auth_manager()
    try:
        # Signature, expiry, audience and revocation, exactly as the REST API checks them.
        user = await manager.get_user_from_token(token)
    except InvalidTokenError as exc:  # includes ExpiredSignatureError
        raise NotAuthenticated(f"Invalid or expired token ({type(exc).__name__})") from None
    if not manager.is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status_code=403, detail="Forbidden")
    return user


@app.exception_handler(NotAuthenticated)
async def _not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
    wants_html = request.method == "GET" and "text/html" in request.headers.get("accept", "")
    if wants_html:
        try:
            from airflow.api_fastapi.app import get_auth_manager

            login = get_auth_manager().get_url_login(next_url=str(request.url))
            return RedirectResponse(login, status_code=303)
        except Exception:  # no auth manager: fall through to a plain 401
            log.exception("cannot build the login URL")
    return JSONResponse({"detail": exc.detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


# ---------------------------------------------------------------- store and rendering


@lru_cache(maxsize=1)
def _store():
    from pipeline.config import get_settings
    from pipeline.store import Store

    return Store.from_settings(get_settings())


def _settings():
    from pipeline.config import get_settings

    return get_settings()


def _fmt_dt(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    return value.astimezone(timezone.utc).strftime(fmt) + " UTC"


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    secs = (datetime.now(timezone.utc) - value).total_seconds()
    if secs < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= size:
            return f"{int(secs // size)} {unit} ago"
    return "just now"


def _safe_url(url: str | None) -> str:
    # Feed-supplied links are shown as links only for http(s): no javascript: or data: URLs.
    if url and urlsplit(url).scheme.lower() in ("http", "https"):
        return url
    return "#"


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(dt=_fmt_dt, ago=_ago, safe_url=_safe_url)
    return env


def _render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    base = request.scope.get("root_path", "").rstrip("/")
    html = _env().get_template(name).render(base=base, **ctx)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            # Same-origin framing only: the Airflow UI shows this page in an iframe.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
            "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


def _store_error(exc: Exception) -> str:
    return (
        "The article store is not ready ("
        + type(exc).__name__
        + "). Run the news_ingest DAG (or `python -m pipeline init`) to create it."
    )


# ---------------------------------------------------------------- filters


def _parse_date(value: str | None, errors: list[str], label: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"{label}: not a date (YYYY-MM-DD): {value!r}")
        return None


def _story_filter(q: dict[str, str], errors: list[str]):
    from pipeline.monitor import DYADS, StoryFilter

    dyad = q.get("dyad") or None
    if dyad and dyad not in DYADS:
        errors.append(f"country pair: unknown {dyad!r}")
        dyad = None
    since = _parse_date(q.get("since"), errors, "from")
    until = _parse_date(q.get("until"), errors, "to")
    min_score = None
    if q.get("min_score"):
        try:
            min_score = float(q["min_score"])
            if not 0 <= min_score <= 1:
                raise ValueError
        except ValueError:
            errors.append(f"minimum score: a number from 0 to 1, not {q['min_score']!r}")
            min_score = None
    try:
        limit = max(1, min(int(q.get("limit") or 50), 500))
    except ValueError:
        limit = 50
    return StoryFilter(
        dyad=dyad,
        topic=(q.get("topic") or "").strip() or None,
        since=datetime.combine(since, time.min, tzinfo=timezone.utc) if since else None,
        # "to" is inclusive: the whole day.
        until=datetime.combine(until + timedelta(days=1), time.min, tzinfo=timezone.utc) if until else None,
        min_score=min_score,
        relevant_only=q.get("all") not in ("1", "on", "true"),
        limit=limit,
    )


# ---------------------------------------------------------------- pages


ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="3" y="4" width="18" height="16" rx="2"/>'
    '<path d="M7 8h10M7 12h10M7 16h6"/></svg>'
)


@app.get("/icon.svg", include_in_schema=False)
def icon() -> Response:
    # Public: the UI's side bar loads it like any other static asset.
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@app.get("/", response_class=HTMLResponse)
def index(request: Request, user: Any = Depends(require_user)) -> HTMLResponse:
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline import monitor

    from .chart import daily_chart_svg

    settings = _settings()
    q = dict(request.query_params)
    errors: list[str] = []
    flt = _story_filter(q, errors)
    ctx: dict[str, Any] = {
        "user": getattr(user, "get_name", lambda: "")(),
        "q": q,
        "flt": flt,
        "errors": errors,
        "dyads": monitor.DYADS,
        "quiet_after_hours": settings.ingest.quiet_after_hours,
    }
    try:
        store = _store()
        ctx.update(
            stories=monitor.recent_stories(store, flt),
            topics=monitor.topics_in_use(store),
            feeds=monitor.feed_health(store, quiet_after_hours=settings.ingest.quiet_after_hours),
            digests=monitor.recent_digests(store, limit=20),
            runs=monitor.recent_runs(store, limit=8),
        )
        daily = monitor.stories_per_day(store, days=14)
        ctx.update(chart=daily_chart_svg(daily), daily_total=daily.total)
    except SQLAlchemyError as exc:
        log.warning("news monitor: store query failed: %s", exc)
        return _render(request, "index.html", status=503, store_error=_store_error(exc), **ctx)
    return _render(request, "index.html", **ctx)


@app.get("/digests/{digest_id}", response_class=HTMLResponse)
def digest_page(request: Request, digest_id: int, user: Any = Depends(require_user)) -> HTMLResponse:
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline import monitor

    try:
        preview = monitor.digest_preview(_store(), digest_id)
    except SQLAlchemyError as exc:
        return _render(request, "digest.html", status=503, store_error=_store_error(exc), preview=None)
    if preview is None:
        return _render(request, "digest.html", status=404, preview=None)
    return _render(request, "digest.html", preview=preview)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


@app.get("/api/stories")
def api_stories(request: Request, user: Any = Depends(require_user)) -> JSONResponse:
    from pipeline import monitor

    errors: list[str] = []
    flt = _story_filter(dict(request.query_params), errors)
    if errors:
        return JSONResponse({"detail": errors}, status_code=422)
    stories = monitor.recent_stories(_store(), flt)
    return JSONResponse(_jsonable([asdict(s) | {"outlets": list(s.outlets)} for s in stories]))


@app.get("/api/feeds")
def api_feeds(user: Any = Depends(require_user)) -> JSONResponse:
    from pipeline import monitor

    settings = _settings()
    feeds = monitor.feed_health(_store(), quiet_after_hours=settings.ingest.quiet_after_hours)
    return JSONResponse(_jsonable([asdict(f) for f in feeds]))


def filter_link(q: dict[str, str], **changes: str | None) -> str:
    """The current filter with some values changed (for clickable labels)."""
    merged = {k: v for k, v in {**q, **changes}.items() if v}
    return "?" + urlencode(merged) if merged else "?"


_env().globals["filter_link"] = filter_link
