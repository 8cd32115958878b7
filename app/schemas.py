"""Request and response models of the public API (shapes fixed in CONTRACT.md; extend, never rename)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nlp.types import CodingRequest, CodingResult, Patient, normalise_sex

SettingName = Literal["outpatient", "inpatient", "emergency"]
SystemName = Literal["icd10cm", "cpt"]


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age: int | None = Field(default=None, ge=0, le=130, description="Age in years at the date of service")
    sex: Literal["female", "male", "other", "unknown"] | None = None

    @field_validator("sex", mode="before")
    @classmethod
    def _sex_aliases(cls, v: object) -> object:
        return normalise_sex(v)


class SuggestRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "text": "Assessment: Type 2 diabetes with diabetic polyneuropathy. Continue metformin.",
                    "setting": "outpatient",
                    "date_of_service": "2026-05-01",
                    "patient": {"age": 67, "sex": "female"},
                    "code_systems": ["icd10cm", "cpt"],
                    "max_suggestions": 20,
                }
            ]
        },
    )

    text: str = Field(description="The clinical note, plain text")
    setting: SettingName = "outpatient"
    date_of_service: dt.date | None = None
    patient: PatientIn = Field(default_factory=PatientIn)
    code_systems: list[SystemName] = Field(default_factory=lambda: ["icd10cm", "cpt"], min_length=1)
    max_suggestions: int = Field(default=20, ge=1, le=200)
    note_id: str | None = Field(default=None, max_length=200)

    @field_validator("date_of_service")
    @classmethod
    def _plausible_date(cls, v: dt.date | None) -> dt.date | None:
        return check_date_of_service(v)

    def to_coding_request(self) -> CodingRequest:
        return CodingRequest(
            text=self.text,
            setting=self.setting,
            date_of_service=self.date_of_service,
            patient=Patient(age=self.patient.age, sex=self.patient.sex),
            code_systems=tuple(dict.fromkeys(self.code_systems)),
            max_suggestions=self.max_suggestions,
        )


class EvidenceOut(BaseModel):
    start: int
    end: int
    text: str
    section: str
    assertion: str


class FlagOut(BaseModel):
    kind: str
    message: str


class SuggestionOut(BaseModel):
    system: str
    code: str
    description: str
    score: float = Field(ge=0.0, le=1.0)
    rank: int
    evidence: list[EvidenceOut]
    flags: list[FlagOut] = Field(default_factory=list)
    units: int = Field(default=1, ge=1, description="Units of service (CPT add-on counts); 1 for ICD-10-CM")


class ExcludedOut(BaseModel):
    text: str
    start: int
    end: int
    reason: str
    candidate_codes: list[str]


class SuggestResponse(BaseModel):
    request_id: str
    model_version: str
    codeset_versions: dict[str, str]
    suggestions: list[SuggestionOut]
    excluded: list[ExcludedOut] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    rules_version: str = ""
    note_id: str | None = None

    @classmethod
    def from_result(cls, result: CodingResult, request_id: str, note_id: str | None = None) -> SuggestResponse:
        return cls(
            request_id=request_id,
            model_version=result.model_version,
            codeset_versions=dict(result.codeset_versions),
            rules_version=result.rules_version,
            note_id=note_id,
            suggestions=[
                SuggestionOut(
                    system=s.system,
                    code=s.code,
                    description=s.description,
                    score=round(min(1.0, max(0.0, s.score)), 4),
                    rank=s.rank,
                    evidence=[EvidenceOut(start=e.start, end=e.end, text=e.text, section=e.section,
                                          assertion=e.assertion) for e in s.evidence],
                    flags=[FlagOut(kind=f.kind, message=f.message) for f in s.flags],
                    units=s.units,
                )
                for s in result.suggestions
            ],
            excluded=[
                ExcludedOut(text=x.text, start=x.start, end=x.end, reason=x.reason,
                            candidate_codes=list(x.candidate_codes))
                for x in result.excluded
            ],
            warnings=list(result.warnings),
        )


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    details: list[dict[str, object]] | None = Field(default=None, description="Per-field problems (validation)")


class ErrorResponse(BaseModel):
    error: ErrorBody


# ---- review, validation, code look-up (HTTP service) ------------------------------------------
ReviewSystem = Literal["icd10cm", "cpt", "hcpcs"]
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,15}$"
# ICD-10-CM took effect on 2015-10-01: earlier dates of service are coded in ICD-9-CM, which we do not serve.
EARLIEST_DATE_OF_SERVICE = dt.date(2015, 10, 1)


def check_date_of_service(value: dt.date | None) -> dt.date | None:
    if value is None:
        return value
    if value < EARLIEST_DATE_OF_SERVICE:
        raise ValueError("dates of service before 2015-10-01 are coded in ICD-9-CM, which is not supported")
    if value > dt.date.today() + dt.timedelta(days=366):
        raise ValueError("the date of service is more than a year in the future")
    return value



class ReviewDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: ReviewSystem
    code: str = Field(pattern=CODE_PATTERN, description="With or without the ICD-10-CM dot")
    action: Literal["accept", "reject", "add"]
    reason: str | None = Field(default=None, max_length=500, description="Why (shown to auditors; no PHI)")


class ReviewRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "decisions": [
                {"system": "icd10cm", "code": "E11.40", "action": "accept"},
                {"system": "icd10cm", "code": "I10", "action": "reject", "reason": "not documented this visit"},
                {"system": "icd10cm", "code": "Z79.84", "action": "add"},
            ],
            "final": True,
            "expected_revision": 0,
        }]},
    )

    decisions: list[ReviewDecision] = Field(default_factory=list, max_length=500)
    final: bool = Field(default=False, description="Close the encounter; later changes answer 409")
    expected_revision: int | None = Field(
        default=None, ge=0, description="The revision the reviewer saw; another one in between answers 409"
    )


class ReviewedCode(BaseModel):
    system: str
    code: str
    status: Literal["pending", "accepted", "rejected", "added"]
    suggested: bool


class ReviewResponse(BaseModel):
    request_id: str
    revision: int
    status: Literal["open", "final"]
    is_replay: bool = Field(default=False, description="True when this repeated the last review and changed nothing")
    codes: list[ReviewedCode]
    warnings: list[str] = Field(default_factory=list)


class ValidateCode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: ReviewSystem
    code: str = Field(pattern=CODE_PATTERN)


class ValidateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "codes": [{"system": "icd10cm", "code": "E11.9"}, {"system": "icd10cm", "code": "E10.9"},
                      {"system": "cpt", "code": "99213"}],
            "date_of_service": "2026-05-01",
            "setting": "outpatient",
            "patient": {"age": 67, "sex": "female"},
        }]},
    )

    codes: list[ValidateCode] = Field(min_length=1, max_length=200)
    date_of_service: dt.date | None = None
    setting: SettingName = "outpatient"
    patient: PatientIn = Field(default_factory=PatientIn)

    @field_validator("date_of_service")
    @classmethod
    def _plausible_date(cls, v: dt.date | None) -> dt.date | None:
        return check_date_of_service(v)


class ValidationIssue(BaseModel):
    kind: str = Field(description="not_found, not_billable, excludes1, duplicate, age, sex, principal, "
                                  "manifestation, no_version_in_force, noncovered")
    severity: Literal["error", "warning"]
    message: str
    related: list[str] = Field(default_factory=list)


class ValidatedCode(BaseModel):
    system: str
    code: str
    description: str | None
    is_billable: bool | None
    version: str | None
    issues: list[ValidationIssue]


class ValidateResponse(BaseModel):
    request_id: str
    is_valid: bool = Field(description="No issue of severity error")
    codes: list[ValidatedCode]
    codeset_versions: dict[str, str]


class CodeDetailOut(BaseModel):
    system: str
    code: str
    short_description: str
    description: str
    is_billable: bool
    kind: str
    parent: str | None
    chapter: str | None
    block: str | None
    version: str
    terms: list[dict[str, str]]
    instructions: dict[str, list[str]]
    children: list[str]


class SearchHitOut(BaseModel):
    system: str
    code: str
    description: str
    is_billable: bool
    score: float
    matched: str


class SearchResponse(BaseModel):
    system: str
    version: str
    query: str
    hits: list[SearchHitOut]
