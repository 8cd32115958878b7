"""A few real training steps on a tiny generated set: the loss falls and the artifact saves, loads and links."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from nlp.encoder import CodeLinker, read_model_spec
from nlp.types import CodeInfo
from training.args import TrainingArguments
from training.data import LinkingData, Pair
from training.losses import IndexSoftmaxLoss, MultipleNegativesRankingLoss
from training.train import train

# Invented codes: what is tested is that training moves phrases toward their code, not clinical content.
_CONCEPTS = [
    ("X01.1", "Inflammation of the left elbow", ["sore swollen left elbow", "left elbow itis", "elbow flare L"]),
    ("X01.2", "Inflammation of the right knee", ["hot right knee", "R knee swelling", "right knee itis"]),
    ("X02.1", "Fracture of the small finger", ["broken pinky", "pinky fx", "little finger break"]),
    ("X02.2", "Fracture of the collar bone", ["broken clavicle", "clavicle fx", "collarbone break"]),
    ("X03.1", "Deficiency of iron in blood", ["low ferritin", "iron poor blood", "Fe deficiency"]),
    ("X03.2", "Excess of sugar in blood", ["high glucose", "sugar too high", "hyperglycaemia"]),
    ("X04.1", "Infection of the upper airway", ["head cold", "URI sx", "common cold"]),
    ("X04.2", "Infection of the urinary bladder", ["bladder infection", "UTI sx", "cystitis"]),
    ("X05.1", "Pain in the lower back", ["LBP", "lumbago", "low back ache"]),
    ("X05.2", "Pain in the chest wall", ["rib pain", "chest wall soreness", "costochondral pain"]),
]


def _tiny_data() -> LinkingData:
    targets = {code: text for code, text, _ in _CONCEPTS}
    train_pairs = [Pair(a, code, "generated") for code, _, anchors in _CONCEPTS for a in anchors]
    random.Random(0).shuffle(train_pairs)
    return LinkingData(targets=targets, train=train_pairs, test=[], held_out_families=set(),
                       siblings={"X01.1": ["X01.2"], "X01.2": ["X01.1"]})


def test_losses_prefer_the_gold_and_mask_duplicate_codes() -> None:
    anchors = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0]]), dim=-1)
    good = MultipleNegativesRankingLoss(20.0)(anchors, anchors.clone())
    bad = MultipleNegativesRankingLoss(20.0)(anchors, anchors.flip(0))
    assert float(good) < 0.01 < float(bad)
    masked = MultipleNegativesRankingLoss(20.0)(anchors, anchors.flip(0), anchor_codes=["A", "A"],
                                               candidate_codes=["A", "A"])
    assert float(masked) == pytest.approx(0.0, abs=1e-6)
    index = IndexSoftmaxLoss(anchors, 20.0)
    assert float(index(anchors, torch.tensor([0, 1]))) < float(index(anchors, torch.tensor([1, 0])))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["index_softmax", "in_batch"])
def test_few_steps_lower_the_loss_and_the_artifact_links(tmp_path: Path, objective: str) -> None:
    out = tmp_path / "model"
    args = TrainingArguments(
        version="tiny-test", output_dir=str(out), cache_dir=str(tmp_path / "cache"), seed=3, batch_size=10,
        max_steps=12, warmup_steps=1, learning_rate=2e-3, max_length=16, evaluate=False, lora_r=4, lora_alpha=8,
        objective=objective,
    )
    result = train(args, data=_tiny_data())
    assert result.steps == 12
    assert result.loss_after < result.loss_before * 0.8, (result.loss_before, result.loss_after)

    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "model.json"} <= set(files)
    assert sum(files.values()) < 2_000_000
    meta = json.loads((out / "model.json").read_text())
    assert meta["version"] == "tiny-test"
    assert meta["target_encoder"] == ("base" if objective == "index_softmax" else "self")
    spec = read_model_spec(out)
    assert spec.version == "tiny-test" and spec.max_length == 16

    codes = {c: CodeInfo("icd10cm", c, d, True, c[:3]) for c, d, _ in _CONCEPTS}
    linker = CodeLinker(codes, tmp_path / "cache", model_dir=out)
    assert linker.version == "tiny-test"
    # index_softmax training embedded the targets with the same base model, into the same cache.
    assert linker.build_report.index_cached == (objective == "index_softmax")
    links = linker.link(["pinky fx", "bladder infection", "something else entirely"], k=3)
    assert [len(row) for row in links] == [3, 3, 3]
    assert links[0][0][0] == "X02.1" and links[1][0][0] == "X04.2"
    assert all(0.0 <= s <= 1.0 for row in links for _, s in row)
    assert all(row[0][1] >= row[1][1] >= row[2][1] for row in links)
