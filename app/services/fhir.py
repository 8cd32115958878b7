"""FHIR R4 `$suggest-codes`: Parameters with a DocumentReference in, Parameters with Condition and
Procedure resources out. Both sides are validated with the `fhir.resources.R4B` models (the package's
default models are R5).

In: `Parameters.parameter[]` holding a `DocumentReference` (its first `text/plain` attachment with base64
`data` is the note), optionally an `Encounter` (class -> setting, period.start -> date of service) and a
`Patient` (birthDate + gender -> age, sex), and optional `setting` (valueCode) / `maxSuggestions`
(valueInteger) parameters.

Out: one `condition` parameter per ICD-10-CM suggestion (category encounter-diagnosis, verificationStatus
provisional) and one `procedure` per CPT suggestion, each carrying score, rank, evidence spans and flags in
extensions (URLs under EXTENSION_BASE), plus requestId / modelVersion / rulesVersion / codesetVersion.
"""

from __future__ import annotations

import base64
import codecs
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from app.errors import ApiError
from app.schemas import PatientIn, SuggestRequest, SuggestResponse, check_date_of_service
from codebooks.loaders.common import SYSTEMS

FHIR_JSON = "application/fhir+json"
EXTENSION_BASE = "urn:notecoder:fhir:extension"
ERROR_SYSTEM = "urn:notecoder:error"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# v3 ActCode encounter classes -> coding setting.
ENCOUNTER_CLASS_SETTING = {
    "AMB": "outpatient", "VR": "outpatient", "HH": "outpatient", "SS": "outpatient", "OBSENC": "outpatient",
    "EMER": "emergency",
    "IMP": "inpatient", "ACUTE": "inpatient", "NONAC": "inpatient", "PRENC": "inpatient",
}
GENDER_SEX = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
TEXT_TYPES = ("text/plain", "")

# Issue type per error code (http://hl7.org/fhir/issue-type).
ISSUE_TYPE = {
    "unauthorized": "login", "forbidden": "forbidden", "not_found": "not-found", "note_too_large": "too-long",
    "body_too_large": "too-long", "internal_error": "exception", "not_ready": "transient",
    "codeset_not_loaded": "not-supported", "unsupported_media_type": "not-supported",
}


@dataclass(frozen=True)
class FhirInput:
    request: SuggestRequest
    subject: dict[str, str]
    encounter: dict[str, str] | None


def operation_outcome(code: str, message: str, request_id: str | None) -> dict[str, Any]:
    outcome: dict[str, Any] = {
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "fatal" if code == "internal_error" else "error",
            "code": ISSUE_TYPE.get(code, "invalid"),
            "details": {"coding": [{"system": ERROR_SYSTEM, "code": code}], "text": message},
            "diagnostics": f"request_id={request_id}" if request_id else None,
        }],
    }
    if request_id:
        outcome["id"] = request_id
    return _drop_none(outcome)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_fhir", message)


def _as_date(value: object) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return None  # partial dates ("2026-05") are too vague for a date of service


def _birth_date(value: object) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        parts = [int(p) for p in value.split("-") if p.isdigit()]
        if parts:
            # A partial birth date ("1950" or "1950-07"): the middle of the period is the best guess.
            return dt.date(parts[0], parts[1] if len(parts) > 1 else 7, 1)
    return None


def _age(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _decode_attachment(doc: DocumentReference) -> str:
    for content in doc.content or []:
        attachment = content.attachment
        media, _, params = (attachment.contentType or "").partition(";")
        if media.strip().lower() not in TEXT_TYPES:
            continue
        if attachment.data is None:
            raise _invalid("the text/plain attachment has no inline `data`; URLs are not fetched (offline service)")
        charset = "utf-8"
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "charset" and val.strip():
                charset = val.strip().strip('"')
        try:
            codecs.lookup(charset)
        except LookupError as exc:
            raise ApiError("invalid_encoding", f"unknown attachment charset {charset!r}; send UTF-8") from exc
        data = attachment.data if isinstance(attachment.data, bytes) else str(attachment.data).encode()
        try:
            return data.decode(charset)
        except UnicodeDecodeError as exc:
            raise ApiError("invalid_encoding", f"the attachment is not valid {charset} text") from exc
    raise _invalid("the DocumentReference has no text/plain attachment with base64 data")


def parse_request(raw: bytes) -> FhirInput:
    """A SuggestRequest from a FHIR R4 Parameters payload; 4xx ApiError on anything else."""
    try:
        payload = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ApiError("invalid_encoding", "the body is not UTF-8; send UTF-8 JSON") from exc
    except json.JSONDecodeError as exc:
        raise ApiError("invalid_json", f"the body is not valid JSON (line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(payload, dict) or payload.get("resourceType") != "Parameters":
        raise _invalid("the body must be a FHIR R4 Parameters resource")
    try:
        params = Parameters.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise _invalid(f"invalid Parameters at {where or 'root'}: {first.get('msg', '')}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        # fhir.resources raises KeyError for an unknown resourceType inside `resource`.
        raise _invalid("a parameter holds an unknown or malformed resource") from exc

    doc: DocumentReference | None = None
    encounter: Encounter | None = None
    patient: Patient | None = None
    setting: str | None = None
    max_suggestions: int | None = None
    for p in params.parameter or []:
        resource = p.resource
        if isinstance(resource, DocumentReference) and doc is None:
            doc = resource
        elif isinstance(resource, Encounter) and encounter is None:
            encounter = resource
        elif isinstance(resource, Patient) and patient is None:
            patient = resource
        elif p.name == "setting":
            setting = p.valueCode or p.valueString
        elif p.name == "maxSuggestions":
            max_suggestions = p.valueInteger or p.valuePositiveInt
    if doc is None:
        raise _invalid("no DocumentReference among the parameters")
    text = _decode_attachment(doc)

    dos: dt.date | None = None
    if encounter is not None and encounter.period is not None:
        dos = _as_date(encounter.period.start)
    if dos is None and doc.context is not None and doc.context.period is not None:
        dos = _as_date(doc.context.period.start)
    if dos is None:
        dos = _as_date(doc.date)
    try:
        check_date_of_service(dos)
    except ValueError as exc:
        raise _invalid(str(exc)) from exc
    if setting is None and encounter is not None and encounter.class_fhir is not None:
        setting = ENCOUNTER_CLASS_SETTING.get((encounter.class_fhir.code or "").upper())

    age = sex = None
    if patient is not None:
        sex = GENDER_SEX.get(patient.gender or "")
        birth = _birth_date(patient.birthDate)
        if birth is not None:
            age = _age(birth, dos or dt.date.today())
            if not 0 <= age <= 130:
                raise _invalid(f"Patient.birthDate gives an age of {age} at the date of service")

    subject = {"display": "unknown patient"}
    if doc.subject is not None and doc.subject.reference:
        subject = {"reference": doc.subject.reference}
    elif patient is not None and patient.id:
        subject = {"reference": f"Patient/{patient.id}"}
    encounter_ref = None
    if encounter is not None and encounter.id:
        encounter_ref = {"reference": f"Encounter/{encounter.id}"}
    elif doc.context is not None and doc.context.encounter:
        ref = doc.context.encounter[0].reference
        encounter_ref = {"reference": ref} if ref else None

    try:
        request = SuggestRequest(
            text=text, setting=setting or "outpatient", date_of_service=dos,
            patient=PatientIn(age=age, sex=sex), note_id=doc.id,
            **({"max_suggestions": max_suggestions} if max_suggestions else {}),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise _invalid(f"{'.'.join(str(p) for p in first.get('loc', ()))}: {first.get('msg', '')}") from exc
    return FhirInput(request=request, subject=subject, encounter=encounter_ref)


def _suggestion_extensions(s: Any) -> list[dict[str, Any]]:
    ext: list[dict[str, Any]] = [
        {"url": f"{EXTENSION_BASE}:score", "valueDecimal": s.score},
        {"url": f"{EXTENSION_BASE}:rank", "valueInteger": s.rank},
    ]
    if s.system != "icd10cm":
        # R4 Procedure has no quantity: units of service (add-on counts, lesions, components) ride here.
        ext.append({"url": f"{EXTENSION_BASE}:units", "valueInteger": s.units})
    for e in s.evidence:
        ext.append({"url": f"{EXTENSION_BASE}:evidence", "extension": [
            {"url": "start", "valueInteger": e.start},
            {"url": "end", "valueInteger": e.end},
            {"url": "text", "valueString": e.text},
            {"url": "section", "valueString": e.section or "unknown"},
            {"url": "assertion", "valueCode": e.assertion},
        ]})
    for f in s.flags:
        ext.append({"url": f"{EXTENSION_BASE}:flag", "extension": [
            {"url": "kind", "valueCode": f.kind}, {"url": "message", "valueString": f.message},
        ]})
    return ext


def build_response(fhir_in: FhirInput, response: SuggestResponse) -> dict[str, Any]:
    """The Parameters resource answering `$suggest-codes`, validated against the R4B models."""
    parameters: list[dict[str, Any]] = [
        {"name": "requestId", "valueString": response.request_id},
        {"name": "modelVersion", "valueString": response.model_version or "unknown"},
    ]
    if response.rules_version:
        parameters.append({"name": "rulesVersion", "valueString": response.rules_version})
    for system, version in sorted(response.codeset_versions.items()):
        parameters.append({"name": "codesetVersion", "part": [
            {"name": "system", "valueUri": SYSTEMS.get(system, ("", f"urn:notecoder:{system}"))[1]},
            {"name": "version", "valueString": version},
        ]})
    for s in response.suggestions:
        coding = {"system": SYSTEMS[s.system][1] if s.system in SYSTEMS else f"urn:notecoder:{s.system}",
                  "code": s.code, "display": s.description}
        common: dict[str, Any] = {
            "extension": _suggestion_extensions(s),
            "code": {"coding": [coding], "text": s.description},
            "subject": fhir_in.subject,
        }
        if fhir_in.encounter:
            common["encounter"] = fhir_in.encounter
        if s.system == "icd10cm":
            resource = {
                "resourceType": "Condition",
                "category": [{"coding": [{"system": CONDITION_CATEGORY, "code": "encounter-diagnosis",
                                          "display": "Encounter Diagnosis"}]}],
                "verificationStatus": {"coding": [{"system": CONDITION_VER_STATUS, "code": "provisional",
                                                   "display": "Provisional"}]},
                **common,
            }
            parameters.append({"name": "condition", "resource": resource})
        else:
            parameters.append({"name": "procedure",
                               "resource": {"resourceType": "Procedure", "status": "completed", **common}})
    out = {"resourceType": "Parameters", "parameter": parameters}
    return json.loads(Parameters.model_validate(out).model_dump_json(exclude_none=True))


def encode_note(text: str) -> str:
    """Base64 of a UTF-8 note, for building requests (tests, examples)."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")

