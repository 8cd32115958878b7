"""The coder review UI under /ui/: login, worklist, one request with highlighted evidence and a review form.

Pages call the same services as the API (`Services.reviews`, the note store); every decision goes through
`ReviewService.review` with the logged-in user as principal, so it is audited like an API review. Note text is
rendered only through Jinja's autoescaping and never logged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app.auth import USER_ROLES, Principal, as_utc, authenticate_user
from app.deps import Services
from app.errors import ApiError
from app.models import SuggestionRun, User
from app.notes import NoteStoreError
from app.schemas import ReviewDecision, ReviewRequest, ReviewResponse, SuggestResponse
from app.services.review import ACTION_STATUS
from app.settings import Settings
from app.ui.highlight import Span, segments
from app.ui.session import LoginThrottle, SessionData, SessionSigner, load_or_create_secret
from codebooks.errors import CodebookError

UI_DIR = Path(__file__).resolve().parent
COOKIE = "notecoder_ui"
PAGE_SIZE = 25
SYSTEMS = ("icd10cm", "cpt", "hcpcs")
# PHI on every page: never cached, never framed, no inline script, nothing loaded from elsewhere.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

@dataclass
class UiState:
    settings: Settings
    templates: Environment
    signer: SessionSigner | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # At start-up, not in create_app: building an app (e.g. for its OpenAPI document) writes no secret file.
    ui: UiState = app.state.ui
    settings = ui.settings
    secret = settings.session_secret.encode() if settings.session_secret else load_or_create_secret(
        settings.data_dir)
    ui.signer = SessionSigner(secret)
    yield


router = APIRouter(prefix="/ui", include_in_schema=False, lifespan=_lifespan)


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the UI pages and their static files on `app`; the session secret is read at start-up."""
    env = Environment(loader=FileSystemLoader(UI_DIR / "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    app.state.ui = UiState(settings=settings, templates=env)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=UI_DIR / "static"), name="ui-static")


# ---- plumbing ---------------------------------------------------------------------------------
def _ui(request: Request) -> UiState:
    return request.app.state.ui  # type: ignore[no-any-return]


def _signer(request: Request) -> SessionSigner:
    signer = _ui(request).signer
    if signer is None:
        raise ApiError("not_ready", "the service is starting; retry shortly")
    return signer


def _services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError("not_ready", "the service is starting; retry shortly")
    return services


def _session(request: Request) -> SessionData | None:
    return _signer(request).loads(request.cookies.get(COOKIE))


def _principal(request: Request, services: Services) -> tuple[Principal, SessionData] | None:
    """The logged-in user, re-read from the database so that deactivation or a role change ends the session."""
    data = _session(request)
    if data is None or data.user is None:
        return None
    with services.runtime.sessions() as session:
        user = session.scalar(select(User).where(User.username == data.user, User.is_active))
    if user is None or user.role not in USER_ROLES or user.role != data.role:
        return None
    return Principal(kind="user", name=user.username, role=user.role), data


def _render(request: Request, template: str, context: Mapping[str, Any], *, status: int = 200,
            session: SessionData | None = None, set_cookie: bool = False) -> HTMLResponse:
    ui = _ui(request)
    ctx = {"request": request, "csrf": _signer(request).csrf_token(session) if session else "", **context}
    response = HTMLResponse(ui.templates.get_template(template).render(ctx), status_code=status,
                            headers=SECURITY_HEADERS)
    if set_cookie and session is not None:
        _set_cookie(request, response, session)
    return response


def _set_cookie(request: Request, response: Response, session: SessionData) -> None:
    response.set_cookie(COOKIE, _signer(request).dumps(session), max_age=_signer(request).ttl_s,
                        path="/ui", httponly=True, samesite="lax", secure=request.url.scheme == "https")


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect(f"/ui/login?next={quote(target, safe='')}")


def _safe_next(value: object) -> str:
    # Only our own pages: "//evil.example" or "/ui/../x" must not turn the login into an open redirect.
    text = str(value or "")
    if text.startswith("/ui/") and not text.startswith("//") and "\\" not in text and ".." not in text:
        return text
    return "/ui/"


def _when(value: dt.datetime) -> str:
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


# ---- login / logout ---------------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request) -> Response:
    services = _services(request)
    if _principal(request, services) is not None:
        return _redirect("/ui/")
    current = _session(request)
    session = current if current is not None and current.user is None else _signer(request).new()
    return _render(request, "login.html", {"next": _safe_next(request.query_params.get("next"))},
                   session=session, set_cookie=session is not current)


@router.post("/login")
async def login(request: Request) -> Response:
    services = _services(request)
    form = await request.form()
    signer = _signer(request)
    current = _session(request)
    next_url = _safe_next(form.get("next"))
    if not signer.check_csrf(current, str(form.get("csrf", ""))):
        fresh = signer.new()
        return _render(request, "login.html", {"next": next_url, "error": "The form expired. Please sign in again."},
                       status=403, session=fresh, set_cookie=True)
    assert current is not None
    username = str(form.get("username", "")).strip()
    password = str(form.get("password", ""))

    def check() -> Principal | None:
        with services.runtime.sessions() as session:
            return authenticate_user(session, username, password)

    throttle = _ui(request).throttle
    wait_s = throttle.retry_after(username)
    if wait_s:
        response = _render(request, "login.html", {"next": next_url, "username": username,
                                                   "error": f"Too many failed sign-ins. Try again in {wait_s} s."},
                           status=429, session=current)
        response.headers["Retry-After"] = str(wait_s)
        return response
    # scrypt takes tens of milliseconds: keep it off the event loop.
    principal = await run_in_threadpool(check) if username and password else None
    if principal is None:
        throttle.failed(username)
        return _render(request, "login.html", {"next": next_url, "username": username,
                                               "error": "Wrong username or password."},
                       status=401, session=current)
    throttle.succeeded(username)
    if principal.role not in USER_ROLES or not principal.may("coder"):
        return _render(request, "login.html", {"next": next_url, "error": "This account may not use the review UI."},
                       status=403, session=current)
    # A new sid at login: a session id planted before login is worth nothing after it.
    response = _redirect(next_url)
    _set_cookie(request, response, signer.new(user=principal.name, role=principal.role))
    return response


@router.get("/logout")
def logout_form(request: Request) -> Response:
    who = _principal(request, _services(request))
    if who is None:
        return _redirect("/ui/login")
    return _render(request, "logout.html", {"user": who[0]}, session=who[1])


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    if not _signer(request).check_csrf(_session(request), str(form.get("csrf", ""))):
        return _redirect("/ui/logout")
    response = _redirect("/ui/login")
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="lax")
    return response


# ---- worklist ---------------------------------------------------------------------------------
@router.get("/")
def worklist(request: Request) -> Response:
    services = _services(request)
    who = _principal(request, services)
    if who is None:
        return _to_login(request)
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    status = request.query_params.get("status", "")
    status = status if status in ("open", "final") else ""
    query = select(SuggestionRun)
    counter = select(func.count()).select_from(SuggestionRun)
    if status:
        query = query.where(SuggestionRun.status == status)
        counter = counter.where(SuggestionRun.status == status)
    with services.runtime.sessions() as session:
        total = int(session.scalar(counter) or 0)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        page = min(page, pages)
        runs = session.scalars(query.order_by(SuggestionRun.created_at.desc(), SuggestionRun.request_id.desc())
                               .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
        rows = [{
            "request_id": r.request_id, "created": _when(r.created_at), "setting": r.setting,
            "note_id": r.note_id, "suggestions": len(json.loads(r.response_json).get("suggestions", [])),
            "status": r.status, "revision": r.revision,
        } for r in runs]
    return _render(request, "worklist.html", {"user": who[0], "rows": rows, "page": page, "pages": pages,
                                              "total": total, "status": status}, session=who[1])


# ---- one request ------------------------------------------------------------------------------
def _detail(services: Services, request_id: str) -> dict[str, Any]:
    """Everything the request page shows, read through the review service and the note store."""
    run, state, reviews = services.reviews.get(request_id)
    response = SuggestResponse.model_validate_json(run.response_json)
    note_error = ""
    with services.runtime.sessions() as session:
        try:
            text = services.notes.load(session, request_id)
        except NoteStoreError as exc:
            text, note_error = None, exc.message
    spans = [Span(e.start, e.end, f"{s.system}:{s.code}") for s in response.suggestions for e in s.evidence]
    spans += [Span(x.start, x.end, x.reason, is_excluded=True) for x in response.excluded]
    status_of = {(c.system, c.code): c.status for c in state.codes}
    suggested = {(s.system, s.code) for s in response.suggestions}
    added = []
    for c in state.codes:
        if (c.system, c.code) in suggested:
            continue
        try:
            detail = services.runtime.codebooks.lookup(c.system, c.code, on=run.date_of_service)
            description, billable = detail.description, detail.is_billable
        except CodebookError:
            description, billable = "", False
        added.append({"system": c.system, "code": c.code, "status": c.status, "description": description,
                      "is_billable": billable})
    return {
        "run": {"request_id": run.request_id, "created": _when(run.created_at), "setting": run.setting,
                "note_id": run.note_id, "status": run.status, "revision": run.revision,
                "date_of_service": run.date_of_service.isoformat() if run.date_of_service else "",
                "note_chars": run.note_chars},
        "response": response,
        "segments": segments(text, spans) if text is not None else None,
        "note_error": note_error,
        "status_of": {f"{k[0]}:{k[1]}": v for k, v in status_of.items()},
        "added": added,
        "reviews": reviews,
        "systems": SYSTEMS,
    }


def _request_page(request: Request, services: Services, who: tuple[Principal, SessionData], request_id: str,
                  *, status: int = 200, message: str = "", message_kind: str = "error") -> Response:
    try:
        context = _detail(services, request_id)
    except ApiError as exc:
        if exc.code != "suggestion_not_found":
            raise
        return _render(request, "error.html", {"user": who[0], "title": "Not found",
                                               "message": f"There is no suggest request {request_id}."},
                       status=404, session=who[1])
    if not message and request.query_params.get("saved"):
        message, message_kind = f"Saved revision {request.query_params['saved']}.", "ok"
    return _render(request, "request.html", {"user": who[0], "message": message, "message_kind": message_kind,
                                             **context}, status=status, session=who[1])


@router.get("/requests/{request_id}")
def request_page(request: Request, request_id: str) -> Response:
    services = _services(request)
    who = _principal(request, services)
    if who is None:
        return _to_login(request)
    return _request_page(request, services, who, request_id)


def _decisions(form: Mapping[str, Any], status_of: Mapping[str, str]) -> list[ReviewDecision]:
    """Only what the coder changed: a radio left at the current state is no decision."""
    decisions = []
    for key, value in form.items():
        if not key.startswith("d:") or value not in ("accept", "reject", "add"):
            continue
        label = key[2:]
        current = status_of.get(label)
        if current is None or ACTION_STATUS[str(value)] == current:
            continue
        system, code = label.split(":", 1)
        decisions.append(ReviewDecision(system=system, code=code, action=value))  # type: ignore[arg-type]
    add_code = str(form.get("add_code", "")).strip()
    if add_code:
        decisions.append(ReviewDecision(system=str(form.get("add_system", "icd10cm")),  # type: ignore[arg-type]
                                        code=add_code, action="add"))
    return decisions


@router.post("/requests/{request_id}/review")
async def submit_review(request: Request, request_id: str) -> Response:
    services = _services(request)
    form = await request.form()
    who = await run_in_threadpool(_principal, request, services)
    if who is None:
        return _to_login(request)
    principal, session = who
    if not _signer(request).check_csrf(session, str(form.get("csrf", ""))):
        return await run_in_threadpool(lambda: _request_page(
            request, services, who, request_id, status=403,
            message="The form expired. Your changes were not saved; please make them again."))

    def apply() -> tuple[int, str, ReviewResponse | None]:
        try:
            run, state, _ = services.reviews.get(request_id)
        except ApiError as exc:
            return exc.status, exc.message, None
        try:
            expected = int(str(form.get("expected_revision", "")))
        except ValueError:
            return 422, "The form is missing its revision; reload the page.", None
        if run.status == "final":
            return 409, "This encounter was already finalized; nothing was changed.", None
        if expected != run.revision:
            return 409, (f"Someone saved a review (revision {run.revision}) while you had this page open. "
                         "The page now shows the current decisions; review them and save again."), None
        status_of = {f"{c.system}:{c.code}": c.status for c in state.codes}
        try:
            decisions = _decisions(form, status_of)
        except ValidationError:
            return 422, "That does not look like a code (letters, digits, dots and dashes only).", None
        is_final = form.get("final") == "1"
        if not decisions and not is_final:
            return 422, "Nothing to save: accept or reject a suggestion, add a code, or tick Finalize.", None
        try:
            result = services.reviews.review(
                request_id, ReviewRequest(decisions=decisions, final=is_final, expected_revision=expected), principal)
        except ApiError as exc:
            if exc.code in ("review_conflict", "review_closed"):
                return 409, ("Someone else changed this review while you had the page open. The page now shows "
                             "the current decisions; review them and save again."), None
            return exc.status, exc.message, None
        return 200, "", result

    status, message, result = await run_in_threadpool(apply)
    if result is not None:
        return _redirect(f"/ui/requests/{quote(request_id, safe='')}?saved={result.revision}")
    return await run_in_threadpool(lambda: _request_page(request, services, who, request_id, status=status,
                                                         message=message))
