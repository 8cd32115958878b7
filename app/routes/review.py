"""Coder review of a suggest request: `POST /v1/suggestions/{request_id}/review` and read-back."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import PlainTextResponse

from app.deps import ReviewerDep, ServicesDep
from app.errors import ApiError
from app.notes import NoteStoreError
from app.routes.common import error_responses
from app.schemas import ReviewRequest, ReviewResponse

router = APIRouter(prefix="/v1/suggestions", tags=["review"])

RequestIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$",
                                    description="The request_id that /v1/suggest returned")]


@router.post(
    "/{request_id}/review",
    response_model=ReviewResponse,
    summary="Accept, reject or add codes; `final: true` closes the encounter",
    description="Needs the coder or admin role. Send `expected_revision` (the revision you saw): a review "
                "in between answers 409 review_conflict. Repeating the last review exactly is answered again "
                "with is_replay true; any other change after a final review answers 409 review_closed.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def review(request_id: RequestIdPath, body: ReviewRequest, services: ServicesDep,
           principal: ReviewerDep) -> ReviewResponse:
    return services.reviews.review(request_id, body, principal)


@router.get("/{request_id}", summary="A suggest request with its review state and history",
            responses=error_responses(401, 403, 404))
def get_suggestion(request_id: RequestIdPath, services: ServicesDep, principal: ReviewerDep) -> dict[str, Any]:
    run, state, reviews = services.reviews.get(request_id)
    return {
        "request_id": run.request_id,
        "note_id": run.note_id,
        "setting": run.setting,
        "date_of_service": run.date_of_service.isoformat() if run.date_of_service else None,
        "note_sha256": run.note_sha256,
        "note_chars": run.note_chars,
        "response": json.loads(run.response_json),
        "review": state.model_dump(),
        "reviews": reviews,
    }


@router.get("/{request_id}/note", summary="The note text, while it is retained",
            response_class=PlainTextResponse, responses=error_responses(401, 403, 404))
def get_note(request_id: RequestIdPath, services: ServicesDep, principal: ReviewerDep) -> PlainTextResponse:
    with services.runtime.sessions() as session:
        try:
            text = services.notes.load(session, request_id)
        except NoteStoreError as exc:
            raise ApiError("not_found", exc.message) from exc
    if text is None:
        raise ApiError("not_found", "no note text is retained for this request (expired or retention 0)")
    return PlainTextResponse(text)
