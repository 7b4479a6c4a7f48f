"""Pretraining the one-channel ResNet18 on the simulated corpus (``python -m lensing pretrain``).

The corpus (:mod:`lensing.simulate.corpus`) is made in chunks of new images: worker processes
simulate chunk c + 1 while the model trains on chunk c, so images are seen fresh rather than
epoch after epoch. Each chunk is trained on together with the ``replay - 1`` chunks before it
(each image is seen ``replay`` times, in different company), with D4 augmentation, Adam and
one one-cycle schedule over the whole run. The curriculum lowers the substructure's strength
as the run goes on.

Bounded: memory holds ``replay`` chunks (float16) and the one being simulated; the disk holds
the last ``replay`` chunk files (``chunks/``), older ones are deleted. Resumable: after every
chunk, ``pretrain_checkpoint.pth`` (weights, optimizer, schedule, random states, history) is
written atomically, so a kill loses at most the chunk in progress; ``resume`` continues from
it. At the end the weights are written in half precision to ``lensing_resnet18.pth`` with
``pretrain_summary.json`` (the corpus, the run, the probe's AUCs) beside them.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lensing.core.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_json
from lensing.core.constants import CLASSES
from lensing.core.metrics import compute_metrics
from lensing.core.progress import bar as progress_bar
from lensing.core.progress import format_seconds, say
from lensing.core.rng import capture_rng, seed_everything, set_rng
from lensing.core.runtime import cpu_state_dict, pick_device, resolve_precision
from lensing.data.batches import TrainBatches
from lensing.model.inference import predict_split
from lensing.model.network import build_model, prepare_model
from lensing.simulate import corpus
from lensing.training.optim import make_optimizer, make_scheduler
from lensing.training.pretrain_config import PretrainConfig
from lensing.training.steps import train_one_epoch

CHECKPOINT_NAME = "pretrain_checkpoint.pth"
WEIGHTS_NAME = "lensing_resnet18.pth"
SUMMARY_NAME = "pretrain_summary.json"
CHUNKS_DIR = "chunks"
# Rates for the plan line. On a 2-core CPU, images seen per second end to end, the workers
# simulating on the same cores (measured: 36.5 with AMX in bf16, the shipped weights' run;
# fp32 scaled by the training speed ratio of fp32 to bf16, 0.6). On a GPU, the training rate
# (an H200, batch 256) and the simulation rate of one worker process, which overlap.
CPU_RATE = {"bf16": 36.5, "fp32": 22.0}
GPU_TRAIN_RATE = 19000.0
SIMULATE_RATE_PER_WORKER = 70.0


def plan_line(config: PretrainConfig, device: torch.device, precision: str) -> str:
    """What the run will do and about how long it should take here."""
    if device.type == "cuda":
        simulate_s = config.chunks * config.chunk_images / SIMULATE_RATE_PER_WORKER
        expected = max(config.images_seen() / GPU_TRAIN_RATE, simulate_s / config.workers)
    else:
        expected = config.images_seen() / CPU_RATE.get(precision, CPU_RATE["fp32"])
    kept = ", ".join(f"{k} {v:.0%}" for k, v in corpus.families(config.hold_out).items())
    return (
        f"Plan (pretrain): {config.chunks} chunk(s) of {config.chunk_images:,} new simulated "
        f"images ({kept}; held out: {', '.join(config.hold_out) or 'none'}), each trained "
        f"with the {config.replay - 1} before it: {config.images_seen():,} images seen, "
        f"{config.total_steps():,} steps on {device} ({precision}), {config.workers} "
        f"simulating worker(s); expected about {format_seconds(expected)}."
    )


class ChunkSource:
    """The corpus chunks: simulated by a worker pool one ahead of training, kept on disk."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        self.folder = Path(config.out_dir) / CHUNKS_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.pool = context.Pool(config.workers) if config.workers > 1 else None
        self.pending: dict[int, Any] = {}

    def path(self, chunk: int) -> Path:
        return self.folder / f"chunk_{chunk:05d}.npz"

    def _tasks(self, chunk: int) -> list[tuple]:
        progress = chunk / max(1, self.config.chunks - 1)
        c = self.config
        return corpus.chunk_tasks(c.seed, chunk, c.chunk_per_class, progress, c.hold_out)

    def prefetch(self, chunk: int) -> None:
        """Start simulating ``chunk`` in the background (no-op past the end or when on disk)."""
        if chunk >= self.config.chunks or chunk in self.pending or self.path(chunk).exists():
            return
        if self.pool is not None:
            self.pending[chunk] = self.pool.map_async(corpus.make_task, self._tasks(chunk), 8)

    def get(self, chunk: int) -> dict[str, np.ndarray]:
        """Chunk ``chunk`` as {"images" float16 (N, 1, 150, 150), "labels", "families"}."""
        if self.path(chunk).exists():
            return self.load(chunk)
        pending = self.pending.pop(chunk, None)
        if pending is not None:
            made = pending.get()
        else:
            made = [corpus.make_task(task) for task in self._tasks(chunk)]
        labels = np.repeat(np.arange(len(CLASSES)), self.config.chunk_per_class)
        data = {
            "images": np.stack([image for image, _ in made]),
            "labels": labels.astype(np.int64),
            "families": np.array([family for _, family in made]),
        }
        buffer = io.BytesIO()
        np.savez(buffer, **data)
        atomic_write_bytes(self.path(chunk), buffer.getvalue())
        return data

    def load(self, chunk: int) -> dict[str, np.ndarray]:
        with np.load(self.path(chunk), allow_pickle=False) as saved:
            return {key: saved[key] for key in ("images", "labels", "families")}

    def forget_before(self, chunk: int) -> None:
        """Delete the chunk files older than ``chunk``."""
        for path in self.folder.glob("chunk_*.npz"):
            if int(path.stem.split("_")[1]) < chunk:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def probe_set(config: PretrainConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{family: (images, labels)} of the default test-i and model-a presets, from corpus seeds."""
    sets = {}
    for family in ("test-i", "model-a"):
        images, labels = corpus.probe_images(config.seed, family, config.probe_per_class)
        sets[family] = (torch.from_numpy(images), torch.from_numpy(labels))
    return sets


def probe_scores(model: nn.Module, probes: dict, device: torch.device, precision: str) -> dict:
    """Macro AUC of the model on each probe family."""
    scores = {}
    for family, split in probes.items():
        probs, labels = predict_split(model, split, device=device, precision=precision)
        scores[family] = compute_metrics(labels, probs, classes=CLASSES, n_bootstrap=0)[
            "auc_macro"
        ]
    return scores


def pretrain(config: PretrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Run (or, with ``resume``, continue) a pretraining; returns the summary."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = ChunkSource(config)  # before torch starts threads: the workers fork cleanly
    try:
        return _pretrain(config, source, resume, progress)
    finally:
        source.close()


def _pretrain(config: PretrainConfig, source: ChunkSource, resume: bool, progress: bool) -> dict:
    device = pick_device(config.device)
    precision = resolve_precision(config.precision, device)
    seed_everything(config.seed)
    model = prepare_model(build_model("none"), device)
    rates = dict.fromkeys(("early", "middle", "late", "fc"), config.lr)
    optimizer = make_optimizer(model, rates, weight_decay=config.weight_decay)
    scheduler = make_scheduler(
        optimizer, "onecycle", config.total_steps(), rates, warmup=config.warmup
    )
    generators = {
        "data": torch.Generator().manual_seed(config.seed),
        "augment": torch.Generator(device=device).manual_seed(config.seed + 1),
    }
    state = _read_checkpoint(config) if resume else None
    start, history, seconds = 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng(state["rng"], generators)
        start, history, seconds = state["chunk"], state["history"], state["seconds"]
        say(f"Resuming the pretraining after chunk {start} of {config.chunks}.")
    say(plan_line(config, device, precision))
    probes = probe_set(config)
    criterion = nn.CrossEntropyLoss()
    source.prefetch(start)
    chunks = progress_bar(
        range(start, config.chunks),
        enabled=progress,
        desc="pretrain",
        unit="chunk",
        total=config.chunks,
        initial=start,
    )
    for chunk in chunks:
        began = time.perf_counter()
        data = source.get(chunk)
        source.prefetch(chunk + 1)
        source.forget_before(chunk - config.replay + 1)
        images, labels = _training_set(source, chunk, data, config.replay)
        batches = TrainBatches((images, labels), config.batch_size, generators["data"], device)
        stats = train_one_epoch(
            model,
            criterion,
            optimizer,
            batches,
            device=device,
            precision=precision,
            augment="d4",
            generator=generators["augment"],
            step_scheduler=scheduler,
            progress=progress,
            description=f"chunk {chunk + 1}",
        )
        entry = _entry(config, chunk, data, stats)
        if (chunk + 1) % config.probe_every == 0 or chunk + 1 == config.chunks:
            entry["probe_auc"] = probe_scores(model, probes, device, precision)
        seconds += time.perf_counter() - began
        history.append(entry)
        _save_checkpoint(config, model, optimizer, scheduler, generators, history, seconds)
        say(_log_line(entry, config))
    return _finish(config, model, history, seconds, device, precision)


def _training_set(source: ChunkSource, chunk: int, data: dict, replay: int):
    parts = [source.load(c) for c in range(max(0, chunk - replay + 1), chunk)] + [data]
    images = torch.from_numpy(np.concatenate([p["images"] for p in parts])).float()
    labels = torch.from_numpy(np.concatenate([p["labels"] for p in parts]))
    return images, labels


def _entry(config: PretrainConfig, chunk: int, data: dict, stats: dict) -> dict:
    low, high = corpus.strength_window(chunk / max(1, config.chunks - 1))
    families, counts = np.unique(data["families"], return_counts=True)
    return {
        "chunk": chunk + 1,
        "new_images": (chunk + 1) * config.chunk_images,
        "images_seen": config.images_seen(chunk + 1),
        "steps": config.total_steps(chunk + 1),
        "strength_dex": [round(low, 3), round(high, 3)],
        "families": {str(f): int(n) for f, n in zip(families, counts, strict=True)},
        "train_loss": stats["train_loss"],
        "images_per_s": stats["images_per_s"],
    }


def _log_line(entry: dict, config: PretrainConfig) -> str:
    probe = entry.get("probe_auc")
    shown = (
        ""
        if probe is None
        else ", probe AUC " + ", ".join(f"{k} {v:.3f}" for k, v in probe.items())
    )
    return (
        f"chunk {entry['chunk']}/{config.chunks}: {entry['images_seen']:,} images seen, "
        f"strength {entry['strength_dex'][0]:+.2f}..{entry['strength_dex'][1]:+.2f} dex, "
        f"loss {entry['train_loss']:.4f}, {entry['images_per_s']:.0f} img/s{shown}"
    )


def _checkpoint_path(config: PretrainConfig) -> Path:
    return Path(config.out_dir) / CHECKPOINT_NAME


def _read_checkpoint(config: PretrainConfig) -> dict | None:
    path = _checkpoint_path(config)
    if not path.exists():
        return None
    from lensing.model.checkpoint import load_checkpoint

    state = load_checkpoint(path, require=("model", "optimizer", "scheduler", "chunk"))
    saved = state.get("config", {})
    mine = _config_dict(config)
    differs = sorted(
        k
        for k in ("images", "chunk_per_class", "replay", "batch_size", "lr", "hold_out", "seed")
        if saved.get(k) != mine.get(k)
    )
    if differs:
        raise ValueError(
            f"{path} was written by a pretraining with other {differs}; use "
            "another --out, or the same options to resume it"
        )
    return state


def _config_dict(config: PretrainConfig) -> dict:
    values = dataclasses.asdict(config)
    values["hold_out"] = list(config.hold_out)
    return values


def _save_checkpoint(config, model, optimizer, scheduler, generators, history, seconds) -> None:
    atomic_torch_save(
        {
            "model": cpu_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng(generators),
            "chunk": len(history),
            "history": history,
            "seconds": seconds,
            "config": _config_dict(config),
        },
        _checkpoint_path(config),
    )


def _finish(config, model, history, seconds, device, precision) -> dict:
    from lensing.model.lensing_weights import save_weights

    out = Path(config.out_dir)
    digest = save_weights(cpu_state_dict(model), out / WEIGHTS_NAME)
    last_probe = next((e["probe_auc"] for e in reversed(history) if "probe_auc" in e), None)
    summary = {
        "weights": WEIGHTS_NAME,
        "sha256": digest,
        "config": _config_dict(config),
        "corpus": corpus.describe(config.seed, config.hold_out),
        "new_images": config.chunks * config.chunk_images,
        "images_seen": config.images_seen(),
        "steps": config.total_steps(),
        "seconds": seconds,
        "device": str(device),
        "precision": precision,
        "probe_auc": last_probe,
        "history": history,
    }
    atomic_write_json(out / SUMMARY_NAME, summary)
    say(
        f"Pretraining done in {format_seconds(seconds)}: {out / WEIGHTS_NAME} (sha256 "
        f"{digest[:12]}...), probe AUC {last_probe}."
    )
    return summary
