"""Coder review of a suggestion run: accept, reject or add codes; a final review closes the encounter.

Concurrency: a review locks its run (`SELECT ... FOR UPDATE`; BEGIN IMMEDIATE on SQLite) and applies only
if nothing changed since the revision the reviewer saw (`expected_revision`), else 409. A retried review
identical to the last one (same reviewer, decisions and finality) is answered again without a second
record; anything else after a final review is 409. Each applied review writes one audit record.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

from sqlalchemy import select

from app import audit
from app.auth import Principal
from app.errors import ApiError
from app.metrics import Metrics
from app.models import Review, SuggestionRun, utcnow
from app.schemas import ReviewedCode, ReviewRequest, ReviewResponse, SuggestResponse
from app.services.storage import write_session
from codebooks.errors import CodebookError
from codebooks.repository import normalize_code

if TYPE_CHECKING:
    from app.deps import RuntimeLike

ACTION_STATUS = {"accept": "accepted", "reject": "rejected", "add": "added"}


def _initial_state(run: SuggestionRun) -> dict[tuple[str, str], ReviewedCode]:
    response = SuggestResponse.model_validate_json(run.response_json)
    return {(s.system, s.code): ReviewedCode(system=s.system, code=s.code, status="pending", suggested=True)
            for s in response.suggestions}


def _apply(state: dict[tuple[str, str], ReviewedCode], decisions: list[dict[str, str | None]]) -> None:
    for d in decisions:
        key = (str(d["system"]), str(d["code"]))
        current = state.get(key)
        suggested = current.suggested if current else False
        status = ACTION_STATUS[str(d["action"])]
        if status == "added" and suggested:
            status = "accepted"  # adding a code that was suggested is accepting it
        state[key] = ReviewedCode(system=key[0], code=key[1], status=status, suggested=suggested)  # type: ignore[arg-type]


class ReviewService:
    def __init__(self, runtime: RuntimeLike, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    def _state(self, session: object, run: SuggestionRun) -> dict[tuple[str, str], ReviewedCode]:
        state = _initial_state(run)
        for review in session.scalars(  # type: ignore[attr-defined]
            select(Review).where(Review.request_id == run.request_id).order_by(Review.revision)
        ):
            _apply(state, json.loads(review.body_json)["decisions"])
        return state

    def _normalized(self, body: ReviewRequest, date: dt.date | None) -> tuple[list[dict[str, str | None]], list[str]]:
        decisions: list[dict[str, str | None]] = []
        seen: dict[tuple[str, str], str] = {}
        warnings: list[str] = []
        for d in body.decisions:
            code = normalize_code(d.system, d.code)
            key = (d.system, code)
            if key in seen and seen[key] != d.action:
                raise ApiError("conflicting_decisions", f"{d.system} {code} is both {seen[key]}ed and {d.action}ed")
            seen[key] = d.action
            if d.action == "add":
                try:
                    detail = self.runtime.codebooks.lookup(d.system, code, on=date)
                except CodebookError as exc:
                    raise ApiError("unknown_code", f"cannot add {d.system} {code}: {exc.message}") from exc
                if not detail.is_billable:
                    warnings.append(f"{d.system} {code} is not billable; a more specific code is needed")
            decisions.append({"system": d.system, "code": code, "action": d.action, "reason": d.reason})
        if not decisions and not body.final:
            raise ApiError("invalid_request", "a review needs at least one decision, or final: true")
        return decisions, warnings

    def get(self, request_id: str) -> tuple[SuggestionRun, ReviewResponse, list[dict[str, object]]]:
        """The run, its current review state and its reviews, oldest first."""
        with self.runtime.sessions() as session:
            run = session.get(SuggestionRun, request_id)
            if run is None:
                raise ApiError("suggestion_not_found", f"no suggest request {request_id}")
            reviews = [
                {"revision": r.revision, "principal": r.principal, "final": r.is_final,
                 "created_at": audit_time(r.created_at), **json.loads(r.body_json)}
                for r in session.scalars(select(Review).where(Review.request_id == request_id)
                                         .order_by(Review.revision))
            ]
            state = self._state(session, run)
            return run, ReviewResponse(request_id=request_id, revision=run.revision, status=run.status,  # type: ignore[arg-type]
                                       codes=list(state.values())), reviews

    def review(self, request_id: str, body: ReviewRequest, principal: Principal) -> ReviewResponse:
        with self.runtime.sessions() as session:
            run = session.get(SuggestionRun, request_id)
            if run is None:
                raise ApiError("suggestion_not_found", f"no suggest request {request_id}; review what /v1/suggest "
                                                       "returned")
            date_of_service = run.date_of_service
        decisions, warnings = self._normalized(body, date_of_service)
        digest = audit.sha256_hex(audit.canonical_json(
            {"principal": principal.label, "decisions": decisions, "final": body.final}
        ))
        with write_session(self.runtime.engine) as session:
            run = session.scalar(select(SuggestionRun).where(SuggestionRun.request_id == request_id)
                                 .with_for_update())
            assert run is not None  # runs are never deleted while the service runs
            last = session.scalar(select(Review).where(Review.request_id == request_id)
                                  .order_by(Review.revision.desc()).limit(1))
            if last is not None and last.digest == digest:
                state = self._state(session, run)
                return ReviewResponse(request_id=request_id, revision=run.revision, status=run.status,  # type: ignore[arg-type]
                                      is_replay=True, codes=list(state.values()), warnings=warnings)
            if run.status == "final":
                raise ApiError("review_closed", f"a final review (revision {run.revision}) closed this encounter")
            if body.expected_revision is not None and body.expected_revision != run.revision:
                raise ApiError("review_conflict", f"the review was based on revision {body.expected_revision} but "
                                                  f"the encounter is at revision {run.revision}; reload and resubmit")
            state = self._state(session, run)
            for d in decisions:
                key = (str(d["system"]), str(d["code"]))
                if d["action"] in ("accept", "reject") and key not in state:
                    raise ApiError("code_not_suggested", f"{key[0]} {key[1]} was not suggested; use action add")
            _apply(state, decisions)
            now = utcnow()
            revision = run.revision + 1
            session.add(Review(request_id=request_id, revision=revision, principal=principal.label, created_at=now,
                               is_final=body.final, digest=digest,
                               body_json=audit.canonical_json({"decisions": decisions})))
            run.revision = revision
            run.status = "final" if body.final else "open"
            audit.append(session, kind="review", request_id=request_id, principal=principal.label, now=now, data={
                "revision": revision, "final": body.final, "decisions": decisions,
                "codes": [{"system": c.system, "code": c.code, "status": c.status} for c in state.values()],
            })
        for d in decisions:
            self.metrics.reviews.labels(str(d["action"])).inc()
        if body.final:
            self.metrics.reviews.labels("final").inc()
        return ReviewResponse(request_id=request_id, revision=revision, status=run.status,  # type: ignore[arg-type]
                              codes=list(state.values()), warnings=warnings)


def audit_time(value: dt.datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
