"""The encoder Scorer: target selection, the committed artifact, the cached index."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from codebooks.repository import CodebookRepository
from nlp.encoder import (
    CodeLinker,
    ModelNotFound,
    default_model_dir,
    is_seventh_character_code,
    read_model_spec,
    select_targets,
)
from nlp.types import CodeInfo, Scorer


def _codes() -> dict[str, CodeInfo]:
    rows = [
        ("S72", "Fracture of femur", False, None),
        ("S72.001", "Fracture of unspecified part of neck of right femur", False, "S72"),
        ("S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter", True, "S72.001"),
        ("S72.001D", "Fracture of unspecified part of neck of right femur, subsequent encounter", True, "S72.001"),
        ("C44.102", "Unspecified malignant neoplasm of skin of right eyelid", False, "C44.10"),
        ("C44.1021", "Unspecified malignant neoplasm of skin of right upper eyelid", True, "C44.102"),
        ("I10", "Essential (primary) hypertension", True, None),
        ("I50", "Heart failure", False, None),
    ]
    return {c: CodeInfo("icd10cm", c, d, b, p) for c, d, b, p in rows}


def test_seventh_character_families_are_embedded_once_through_their_base() -> None:
    codes = _codes()
    assert is_seventh_character_code(codes["S72.001A"], codes)
    assert not is_seventh_character_code(codes["C44.1021"], codes)
    assert is_seventh_character_code(codes["S72.001D"], codes, owners={"S72"})
    assert not is_seventh_character_code(codes["C44.1021"], codes, owners={"S72"})
    assert select_targets(codes) == {
        "C44.1021": "Unspecified malignant neoplasm of skin of right upper eyelid",
        "I10": "Essential (primary) hypertension",
        "S72.001": "Fracture of unspecified part of neck of right femur",
    }


def test_committed_artifact_is_small_and_described() -> None:
    folder = default_model_dir()
    spec = read_model_spec(folder)
    assert spec.version == "minilm-icd-lora-v3" and spec.target_encoder == "base"
    # Its own pipeline floor and link calibration, fitted on CodiEsp train notes it was not trained on.
    assert spec.min_cosine is not None and 0.0 < spec.min_cosine < 0.7
    assert spec.calibration and spec.calibration[-1][1] > spec.calibration[0][1]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 25_000_000


def test_missing_artifact_raises_a_coded_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as err:
        read_model_spec(tmp_path)
    assert err.value.code == "encoder_model_not_found"


def test_model_json_floor_is_read_and_checked(tmp_path: Path) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / name).write_bytes((default_model_dir() / name).read_bytes())
    meta = json.loads((default_model_dir() / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "min_cosine": 0.55}))
    assert read_model_spec(tmp_path).min_cosine == 0.55
    (tmp_path / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "min_cosine"}))
    assert read_model_spec(tmp_path).min_cosine is None
    (tmp_path / "model.json").write_text(json.dumps({**meta, "min_cosine": "high"}))
    with pytest.raises(ModelNotFound, match="min_cosine"):
        read_model_spec(tmp_path)


def test_model_json_link_calibration_is_read_and_checked(tmp_path: Path) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp_path / name).write_bytes((default_model_dir() / name).read_bytes())
    meta = json.loads((default_model_dir() / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "link_calibration": [[0.4, 0.05], [0.7, 0.3]]}))
    assert read_model_spec(tmp_path).calibration == ((0.4, 0.05), (0.7, 0.3))
    for empty in ([], None):  # a fit that found no links leaves the model uncalibrated
        (tmp_path / "model.json").write_text(json.dumps({**meta, "link_calibration": empty}))
        assert read_model_spec(tmp_path).calibration is None
    for bad in ([[0.7, 0.3], [0.4, 0.05]], [[0.4, 0.3], [0.7, 0.1]], [[0.4, 1.5]], [[0.4, True]], "steep", [1]):
        (tmp_path / "model.json").write_text(json.dumps({**meta, "link_calibration": bad}))
        with pytest.raises(ModelNotFound, match="link_calibration"):
            read_model_spec(tmp_path)


def test_targets_of_the_real_code_set_match_the_tabular_families(codebook_repository: CodebookRepository) -> None:
    codes = codebook_repository.codes("icd10cm")
    owners = set(codebook_repository.instructions("icd10cm", "seven_chr_def"))
    targets = select_targets(codes, owners)
    assert "S72.001" in targets and "S72.001A" not in targets and "I10" in targets
    extensions = [i for i in codes.values() if is_seventh_character_code(i, codes, owners)]
    bases = {i.parent for i in extensions}
    assert all(codes[c].is_billable != (c in bases) for c in targets)
    billable = sum(1 for i in codes.values() if i.is_billable)
    assert 70_000 < billable and 50_000 < len(extensions)
    assert len(targets) == billable - len(extensions) + len(bases)


def _subset(codes: Mapping[str, CodeInfo], prefixes: tuple[str, ...]) -> dict[str, CodeInfo]:
    """Codes under `prefixes`, with their parents so that seventh-character families resolve."""
    keep = {c: i for c, i in codes.items() if c.startswith(prefixes)}
    for info in list(keep.values()):
        if info.parent and info.parent in codes:
            keep.setdefault(info.parent, codes[info.parent])
    return keep


@pytest.mark.slow
def test_committed_model_links_common_clinical_phrases(
    codebook_repository: CodebookRepository, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Circulatory and metabolic codes plus the distractors the base model fell for (R06.6 hiccough for "HTN",
    # T53 chloroform toxicity for "CHF exacerbation"): ~3k targets keep the first build under a minute.
    codes = _subset(codebook_repository.codes("icd10cm"), ("I", "E10", "E11", "E78", "R0", "T53", "J44"))
    owners = set(codebook_repository.instructions("icd10cm", "seven_chr_def"))
    cache = tmp_path_factory.mktemp("encoder-cache")
    linker = CodeLinker(codes, cache, seventh_character_owners=owners)
    assert isinstance(linker, Scorer)
    assert linker.version == "minilm-icd-lora-v3"
    assert not linker.build_report.index_cached

    links = linker.link(["HTN", "CHF exacerbation", "T2DM", "hyperlipidemia"], k=5)
    assert [len(r) for r in links] == [5, 5, 5, 5]
    assert "I10" in [c for c, _ in links[0]]
    assert any(c.startswith("I50.") for c, _ in links[1])
    assert any(c.startswith("E11.") for c, _ in links[2])
    assert any(c.startswith("E78.") for c, _ in links[3])
    assert linker.link([]) == []
    assert linker.link_within("HTN", ["I10", "R06.6", "NOT-A-CODE"])[0][0] == "I10"

    again = CodeLinker(codes, cache, seventh_character_owners=owners)
    assert again.build_report.model_cached and again.build_report.index_cached
    assert again.link(["HTN"], k=3) == linker.link(["HTN"], k=3)


@pytest.mark.slow
def test_base_model_option_links_without_the_adapter(tmp_path: Path) -> None:
    codes = _codes()
    linker = CodeLinker(codes, tmp_path, use_base_model=True)
    assert linker.version == "all-minilm-l6-v2-base"
    top = linker.link(["broken right femoral neck"], k=10)[0]
    assert len(top) == 3 and top[0][0] == "S72.001"
