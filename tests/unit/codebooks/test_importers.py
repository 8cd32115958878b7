from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from codebooks.bootstrap import prepare_database
from codebooks.db import make_engine
from codebooks.errors import CodeNotFound, ImportFormatError
from codebooks.loaders.cpt import import_licensed_cpt, parse_cpt_file
from codebooks.loaders.hcpcs import import_hcpcs, parse_anweb
from codebooks.loaders.icd10cm_index import import_index
from codebooks.loaders.mce import import_mce, parse_mce
from codebooks.repository import CodebookRepository
from tests.conftest import shared_file

HCPCS = ("refdata", "hcpcs_2020", "HCPC2020_ANWEB_w_disclaimer.txt")
MCE = ("refdata", "mce_fy2016_2020", "MCE_Simple_Code_Edits_v37.txt")
INDEX = ("refdata", "icd10cm_2025_index_wbdill", "csv", "ICD10CM_2025_Index.csv")


@pytest.fixture()
def fresh(tmp_path: Path) -> sessionmaker[Session]:
    """A database of its own: importers write to it."""
    return prepare_database(make_engine(f"sqlite:///{tmp_path / 'nc.db'}"))


def test_hcpcs_anweb_parses_continuations_and_modifiers() -> None:
    records = {r["code"]: r for r in parse_anweb(shared_file(*HCPCS))}
    assert len([r for r in records.values() if r["kind"] == "code"]) > 6000
    a0080 = records["A0080"]
    assert a0080["long"].startswith("Non-emergency transportation, per mile - vehicle provided by volunteer")
    assert a0080["long"].endswith("(individual or organization), with no vested interest")
    assert records["AD"]["kind"] == "modifier"


def test_hcpcs_import_and_lookup(fresh: sessionmaker[Session]) -> None:
    with fresh.begin() as s:
        report = import_hcpcs(s, shared_file(*HCPCS))
    assert report.version == "2020" and report.codes > 6000
    repo = CodebookRepository(fresh)
    assert repo.lookup("hcpcs", "A0021").short_description == "Outside state ambulance serv"
    with fresh.begin() as s:
        assert import_hcpcs(s, shared_file(*HCPCS)).skipped


def test_mce_import_dots_diagnoses_and_keeps_edit_types(fresh: sessionmaker[Session]) -> None:
    version, rows = parse_mce(shared_file(*MCE))
    assert version == "37"
    edit_types = {r["edit_type"] for r in rows}
    assert {"Newborn_Only", "Pediatric_Only", "Maternity_Only", "Adult_Only", "Male_Only", "Female_Only",
            "Principal_Unacceptable", "Principal_Manifestation"} <= edit_types
    with fresh.begin() as s:
        report = import_mce(s, shared_file(*MCE))
    assert report.version == "v37" and report.edits == len(rows)
    repo = CodebookRepository(fresh)
    assert {("Newborn_Only", "D"), ("Male_Only", "D")} <= set(repo.edits("N47.0"))
    assert [v for v in repo.versions("mce")][0].effective_from.isoformat() == "2019-10-01"


def test_index_terms_attach_to_codes(fresh: sessionmaker[Session]) -> None:
    with fresh.begin() as s:
        report = import_index(s, shared_file(*INDEX))
    assert report.terms > 50_000
    repo = CodebookRepository(fresh)
    e119 = repo.lookup("icd10cm", "E11.9")
    assert any(src == "index" and text.startswith("Diabetes, diabetic") and "type 2" in text
               for src, text in e119.terms)
    with fresh.begin() as s:
        assert import_index(s, shared_file(*INDEX)).skipped


def test_licensed_cpt_replaces_curated_wording(fresh: sessionmaker[Session], tmp_path: Path) -> None:
    repo = CodebookRepository(fresh)
    curated = repo.lookup("cpt", "99213")
    assert curated.description and "(licensed)" not in curated.description
    licensed = tmp_path / "cpt_licensed.tsv"
    licensed.write_text("CPT_CODE\tLONG_DESCRIPTION\n99213\tLicensed wording for 99213 (licensed)\n"
                        "93000\tLicensed wording for 93000 (licensed)\n", encoding="utf-8")
    with fresh.begin() as s:
        report = import_licensed_cpt(s, licensed)
    assert report.codes == 2
    assert repo.lookup("cpt", "99213").description == "Licensed wording for 99213 (licensed)"
    assert any(v.is_licensed for v in repo.versions("cpt"))
    with pytest.raises(CodeNotFound):
        repo.lookup("cpt", "99214")  # the licensed set is what is in force now


@pytest.mark.parametrize(
    "content",
    [
        "code,descriptor\n9921,too short\n",  # not a CPT code
        "foo,bar\n99213,x\n",  # no recognisable columns
        "just one column\n",
    ],
)
def test_bad_cpt_files_are_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ImportFormatError):
        parse_cpt_file(path)


def test_wrong_files_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hello\tworld\n", encoding="utf-8")
    with pytest.raises(ImportFormatError):
        parse_mce(path)
    with pytest.raises(ImportFormatError):
        parse_anweb(path)
    with pytest.raises(ImportFormatError):
        parse_cpt_file(tmp_path / "missing.csv")
