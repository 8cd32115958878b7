from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from codebooks.bootstrap import load_defaults, prepare_database
from codebooks.db import make_engine
from codebooks.models import Code, CodeSetVersion
from codebooks.repository import CodebookRepository

# FY2026 (April 2026) tabular: 74,719 billable codes. simple-icd-10-cm reports 74,736 leaf items
# because five names are listed twice (block and category: B20, F99, P84, R99, Z66) and twelve
# sub-blocks without codes (C00-C75, M00-M25, ...) count as leaves.
BILLABLE = 74_719
PACKAGE_LEAF_ITEMS = 74_736
ITEMS = 98_466  # 98,505 listed, 39 of them twice


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sessions(request: pytest.FixtureRequest, codebook_sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    if request.param == "sqlite":
        return codebook_sessions
    engine = make_engine(request.getfixturevalue("pg_database_url"))
    return prepare_database(engine)


def test_full_tabular_is_loaded(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        version = s.scalar(select(CodeSetVersion).where(CodeSetVersion.system_name == "icd10cm"))
        assert version is not None and version.is_complete
        assert version.version == "FY2026-04"
        count = lambda *w: s.scalar(select(func.count()).select_from(Code).where(Code.version_id == version.id, *w))  # noqa: E731
        assert count() == ITEMS
        assert count(Code.is_billable) == BILLABLE


def test_package_leaf_count_reconciles_with_billable_count() -> None:
    import simple_icd_10_cm as cm

    listed = cm.get_all_codes(True)
    assert sum(1 for c in listed if cm.is_leaf(c)) == PACKAGE_LEAF_ITEMS
    unique = list(dict.fromkeys(listed))
    empty_blocks = [
        c for c in unique if cm.is_leaf(c) and (cm.is_chapter(c) or (cm.is_block(c) and not cm.is_category(c)))
    ]
    seen: set[str] = set()
    duplicated_leaves = [c for c in listed if cm.is_leaf(c) and (c in seen or seen.add(c))]
    assert len(empty_blocks) == 12
    assert len(duplicated_leaves) == 5
    assert PACKAGE_LEAF_ITEMS - len(empty_blocks) - len(duplicated_leaves) == BILLABLE


def test_lookup_billable_and_category(sessions: sessionmaker[Session]) -> None:
    repo = CodebookRepository(sessions)
    leaf = repo.lookup("icd10cm", "E11.40")
    assert leaf.description == "Type 2 diabetes mellitus with diabetic neuropathy, unspecified"
    assert leaf.is_billable and leaf.parent == "E11.4" and leaf.block == "E08-E13"
    category = repo.lookup("icd10cm", "e114")  # undotted, lower case: normalized
    assert category.code == "E11.4" and not category.is_billable
    assert "E11.40" in category.children


def test_tabular_instructions(sessions: sessionmaker[Session]) -> None:
    repo = CodebookRepository(sessions)
    e11 = repo.lookup("icd10cm", "E11")
    assert any("type 1 diabetes mellitus (E10.-)" == t for t in e11.instructions["excludes1"])
    assert "Z79.4" in repo.instructions("icd10cm", "use_additional")["E11"]
    assert "E10.-" in repo.instructions("icd10cm", "excludes1")["E11"]
    seven = repo.seven_chr_defs()["S72"]
    assert seven["A"] == "initial encounter for closed fracture"
    assert seven["D"].startswith("subsequent encounter for closed fracture")
    assert seven["S"] == "sequela"
    assert repo.lookup("icd10cm", "S72.001A").is_billable


def test_search_finds_specific_code_first(sessions: sessionmaker[Session]) -> None:
    hits = CodebookRepository(sessions).search("icd10cm", "type 2 diabetes neuropathy", limit=5)
    assert "E11.40" in [h.code for h in hits]
    assert CodebookRepository(sessions).search("icd10cm", "high blood pressure")[0].code == "I10"


def test_search_by_code_prefix(sessions: sessionmaker[Session]) -> None:
    repo = CodebookRepository(sessions)
    codes = [h.code for h in repo.search("icd10cm", "e114", limit=6)]
    assert codes[0] == "E11.4" and set(codes[1:]) <= {"E11.40", "E11.41", "E11.42", "E11.43", "E11.44", "E11.49"}
    assert [h.code for h in repo.search("icd10cm", "E11.4", billable_only=True, limit=3)] == [
        "E11.40", "E11.41", "E11.42"]
    assert repo.search("cpt", "99213")[0].code == "99213"


def test_loading_again_is_idempotent(sessions: sessionmaker[Session]) -> None:
    reports = load_defaults(sessions)
    assert all(r.skipped for r in reports)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(CodeSetVersion)) >= 2
        assert s.scalar(select(func.count()).select_from(Code).where(Code.code == "E11.40")) == 1
