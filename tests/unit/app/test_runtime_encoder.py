"""NOTECODER_ENCODER_MODEL picks the encoder the runtime builds: the committed adapter, the base model, a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.runtime import _encoder
from app.settings import Settings
from codebooks.repository import CodebookRepository
from nlp.encoder import BASE_VERSION, ModelNotFound, default_model_dir, read_model_spec
from nlp.types import CodeInfo

_CODES = {
    c: CodeInfo("icd10cm", c, d, True, None)
    for c, d in (("I10", "Essential (primary) hypertension"), ("E78.5", "Hyperlipidemia, unspecified"),
                 ("J45.909", "Unspecified asthma, uncomplicated"))
}


@pytest.mark.slow
def test_encoder_model_setting_chooses_committed_base_or_folder(
    codebook_repository: CodebookRepository, tmp_path: Path
) -> None:
    def build(choice: str):  # type: ignore[no-untyped-def]
        return _encoder(Settings(data_dir=tmp_path, encoder_model=choice), codebook_repository, _CODES)

    committed = build("")
    assert committed.version == read_model_spec(default_model_dir()).version != BASE_VERSION
    assert build("base").version == BASE_VERSION
    assert build(str(default_model_dir())).version == committed.version
    assert build(" BASE ").link(["high blood pressure"], k=1)[0][0][0] == "I10"
    with pytest.raises(ModelNotFound):
        build(str(tmp_path / "no-such-adapter"))
    assert _encoder(Settings(data_dir=tmp_path, use_encoder=False), codebook_repository, _CODES) is None
