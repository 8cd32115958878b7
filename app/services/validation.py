"""Claim-style checks on a list of codes for one encounter.

Per code: it exists in the code-set version in force on the date of service, and is billable. Across the
list: duplicates and ICD-10-CM Excludes1 pairs (a note on a code applies to everything below it, so the
notes of all ancestors count). With a Medicare Code Editor file imported: age, sex and first-listed
diagnosis edits. The first ICD-10-CM code in the list is taken as the principal / first-listed diagnosis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from app.schemas import ValidatedCode, ValidateRequest, ValidateResponse, ValidationIssue
from codebooks.errors import CodebookError
from codebooks.repository import normalize_code

if TYPE_CHECKING:
    from codebooks.repository import CodebookRepository

CODE_TOKEN = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{0,4})?-?$")
RANGE_TOKEN = re.compile(r"^([A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?)-([A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?)$")

# MCE age edits (years, inclusive), from the Medicare Code Editor definitions (v33+).
AGE_EDITS = {
    "Newborn_Only": (0, 0, "a newborn (age 0)"),
    "Pediatric_Only": (0, 17, "a pediatric patient (0-17)"),
    "Maternity_Only": (9, 64, "a maternity patient (9-64)"),
    "Adult_Only": (15, 124, "an adult (15-124)"),
}
SEX_EDITS = {"Female_Only": "female", "Male_Only": "male"}


def _plain(code: str) -> str:
    return code.replace(".", "")


def target_matches(target: str, code: str) -> bool:
    """Whether an Excludes1 target ("E10.-", "O24.4-", "P70.2", "P70-P74") covers `code` (dotted)."""
    c = _plain(code)
    m = RANGE_TOKEN.match(target)
    if m:
        start, end = _plain(m.group(1)), _plain(m.group(2))
        return start <= c[: len(start)] and c[: len(end)] <= end
    if CODE_TOKEN.match(target):
        return c.startswith(_plain(target.rstrip("-").rstrip(".")))
    return False  # free-text notes ("certain localized infections - see ...") name no code


class Validator:
    """Built once at start-up: Excludes1 notes and the ICD-10-CM hierarchy are read into memory."""

    def __init__(self, codebooks: CodebookRepository) -> None:
        self.codebooks = codebooks
        self.excludes1: Mapping[str, Sequence[str]] = codebooks.instructions("icd10cm", "excludes1")
        self.parents: dict[str, str | None] = {c: info.parent for c, info in codebooks.codes("icd10cm").items()}

    def lineage(self, code: str) -> Iterable[str]:
        seen = set()
        current: str | None = code
        while current and current not in seen:
            seen.add(current)
            yield current
            current = self.parents.get(current)

    def excludes1_of(self, code: str) -> list[tuple[str, str]]:
        """(note holder, target) pairs that apply to `code`."""
        return [(holder, t) for holder in self.lineage(code) for t in self.excludes1.get(holder, ())]

    def validate(self, body: ValidateRequest, request_id: str) -> ValidateResponse:
        dos = body.date_of_service
        out: list[ValidatedCode] = []
        versions: dict[str, str] = {}
        seen: set[tuple[str, str]] = set()
        licensed = {v.system: v.is_licensed for v in self.codebooks.versions()}
        age, sex = body.patient.age, body.patient.sex
        principal_done = False
        for item in body.codes:
            code = normalize_code(item.system, item.code)
            issues: list[ValidationIssue] = []
            description = billable = version = None
            if (item.system, code) in seen:
                issues.append(ValidationIssue(kind="duplicate", severity="warning",
                                              message=f"{code} is listed more than once"))
            seen.add((item.system, code))
            try:
                detail = self.codebooks.lookup(item.system, code, on=dos)
                description, billable, version = detail.description, detail.is_billable, detail.version
                versions[item.system] = detail.version
                if not detail.is_billable:
                    children = ", ".join(detail.children[:8]) + (" ..." if len(detail.children) > 8 else "")
                    issues.append(ValidationIssue(
                        kind="not_billable", severity="error", related=list(detail.children[:50]),
                        message=f"{code} is a {detail.kind}, not a billable code; choose a more specific one"
                                + (f" ({children})" if children else ""),
                    ))
                if dos is not None and not self.codebooks.is_in_force(item.system, dos):
                    issues.append(ValidationIssue(
                        kind="no_version_in_force", severity="warning",
                        message=f"no loaded {item.system} version covers {dos.isoformat()}; checked against "
                                f"{detail.version}",
                    ))
            except CodebookError as exc:
                curated = item.system == "cpt" and not licensed.get("cpt", False)
                issues.append(ValidationIssue(
                    kind="not_found", severity="warning" if curated else "error",
                    message=exc.message + ("; the curated CPT list is partial, import the licensed file to check "
                                           "every code" if curated else ""),
                ))
            if item.system == "icd10cm" and description is not None:
                is_principal = not principal_done
                principal_done = True
                issues.extend(self._mce(code, dos, age, sex, is_principal, body.setting))
            out.append(ValidatedCode(system=item.system, code=code, description=description, is_billable=billable,
                                     version=version, issues=issues))
        self._excludes1_pairs(out)
        return ValidateResponse(
            request_id=request_id,
            is_valid=not any(i.severity == "error" for c in out for i in c.issues),
            codes=out,
            codeset_versions=versions,
        )

    def _excludes1_pairs(self, out: list[ValidatedCode]) -> None:
        icd = [c for c in out if c.system == "icd10cm" and c.description is not None]
        for a in icd:
            for holder, target in self.excludes1_of(a.code):
                for b in icd:
                    if b.code == a.code or b.code in self.lineage(a.code) or a.code in self.lineage(b.code):
                        continue
                    if target_matches(target, b.code):
                        a.issues.append(ValidationIssue(
                            kind="excludes1", severity="error", related=[b.code],
                            message=f"Excludes1 at {holder}: {a.code} and {b.code} ({target}) are not coded together "
                                    "unless the conditions are unrelated",
                        ))
                        break

    def _mce(self, code: str, dos: object, age: int | None, sex: str | None, is_principal: bool,
             setting: str) -> list[ValidationIssue]:
        issues: list[ValidationIssue] = []
        for edit_type, code_type in self.codebooks.edits(code, on=dos):  # type: ignore[arg-type]
            if code_type != "D":
                continue
            if edit_type in AGE_EDITS and age is not None:
                low, high, who = AGE_EDITS[edit_type]
                if not low <= age <= high:
                    issues.append(ValidationIssue(kind="age", severity="error",
                                                  message=f"{code} is for {who}; the patient is {age}"))
            if edit_type == "Maternity_Only" and sex == "male":
                issues.append(ValidationIssue(kind="sex", severity="error",
                                              message=f"{code} is a maternity diagnosis; the patient is male"))
            if edit_type in SEX_EDITS and sex in ("female", "male") and sex != SEX_EDITS[edit_type]:
                issues.append(ValidationIssue(kind="sex", severity="error",
                                              message=f"{code} is for {SEX_EDITS[edit_type]} patients; "
                                                      f"the patient is {sex}"))
            if is_principal and edit_type == "Principal_Manifestation":
                issues.append(ValidationIssue(kind="manifestation", severity="error",
                                              message=f"{code} is a manifestation code; list the underlying "
                                                      "condition first"))
            if is_principal and edit_type == "Principal_Unacceptable":
                issues.append(ValidationIssue(kind="principal", severity="warning" if setting != "inpatient"
                                              else "error",
                                              message=f"{code} is not acceptable as the principal diagnosis"))
            if is_principal and edit_type == "Principal_Questionable_Admit" and setting == "inpatient":
                issues.append(ValidationIssue(kind="principal", severity="warning",
                                              message=f"{code} is a questionable reason for admission"))
        return issues
