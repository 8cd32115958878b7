"""Request and response models of the public API (shapes fixed in CONTRACT.md; extend, never rename)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nlp.types import CodingRequest, CodingResult, Patient

SettingName = Literal["outpatient", "inpatient", "emergency"]
SystemName = Literal["icd10cm", "cpt"]


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    age: int | None = Field(default=None, ge=0, le=130, description="Age in years at the date of service")
    sex: Literal["female", "male", "other", "unknown"] | None = None

    @field_validator("sex", mode="before")
    @classmethod
    def _sex_aliases(cls, v: object) -> object:
        aliases = {"f": "female", "m": "male", "o": "other", "u": "unknown"}
        return aliases.get(v.strip().lower(), v.strip().lower()) if isinstance(v, str) else v


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


class ErrorResponse(BaseModel):
    error: ErrorBody
