"""The package on one CUDA device: ``python -m benchmarks.gpu --data DIR --out FILE.json``.

Everything is measured with the package's own code, so the figures are what a user gets:

- ``speed``: training images/s of ``lensing.training.steps.train_one_epoch`` over
  ``TrainBatches`` with the split resident on the GPU (bf16 autocast, channels_last, fused
  Adam, D4 augmentation on the device), at batch 256 and 512 with ``torch.compile`` off, and
  at batch 512 with it on; inference images/s of ``predict_split`` at batch 512, plain and
  with D4 averaging (8 forward passes per image, batches copied from host memory as in
  ``evaluate``);
- ``full``: a run of ``lensing.training.fit.fit`` on the set in ``--data`` (``--epochs`` 30,
  batch 512, random init, the default recipe), then ``evaluate_checkpoint`` on its test split
  with D4 averaging: wall times of loading, training and evaluating, the images/s of the
  epochs, and the test AUC.

The report is one JSON with the device, the versions and every figure, and a markdown table on
stdout. ``--tiny`` runs the same code paths in seconds (batch 4, one short epoch, compile off)
so that CI keeps it from rotting; ``--device cpu`` is only allowed with ``--tiny``. Without CUDA
(and without ``--tiny --device cpu``) it says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lensing.core.atomic import atomic_write_json
from lensing.core.constants import CLASSES, IMAGE_SIZE, REPORTS_DIR

# The aims of the GPU run: one H200, the real set's size (27,000 training images after the
# 10% test split), 30 epochs.
AIM_TRAIN_IMAGES_PER_S = 20_000
AIM_FULL_RUN_S = 60.0
ANCHOR_IMAGES_PER_S = 5_700  # public figure: ResNet18, 150 px, one H200, per-file loader
SUITES: dict[str, dict[str, Any]] = {
    "full": {
        "train": ((256, False), (512, False), (512, True)),  # (batch, compile)
        "pool_batches": 40,  # distinct batches resident on the GPU per timed epoch
        "warmup_batches": 6,  # an epoch of these first (compiles when compile is on)
        "infer_batch": 512,
        "infer_images": 8192,
        "epochs": 30,
        "batch_size": 512,
    },
    "tiny": {
        "train": ((4, False),),
        "pool_batches": 3,
        "warmup_batches": 1,
        "infer_batch": 4,
        "infer_images": 8,
        "epochs": 1,
        "batch_size": 4,
    },
}
NO_CUDA = (
    "error: no CUDA device here (torch.cuda.is_available() is False); this benchmark measures "
    "a GPU. For a check of the code path on a CPU: --device cpu --tiny"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _pool(n: int) -> tuple[Any, Any]:
    """``n`` random images and labels in host memory, seeded."""
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return images, torch.randint(len(CLASSES), (n,), generator=generator)


def train_rate(device: Any, batch: int, compile_model: bool, suite: dict) -> dict:
    """Images/s of one timed ``train_one_epoch`` after a warm-up epoch, the split on the GPU."""
    import torch
    from torch import nn

    from lensing.core.rng import seed_everything
    from lensing.data.batches import TrainBatches
    from lensing.model.network import build_model, prepare_model
    from lensing.training.optim import make_optimizer
    from lensing.training.recipes import recipe_rates
    from lensing.training.steps import train_one_epoch

    seed_everything(0)
    model = prepare_model(build_model("none"), device, compile_model=compile_model)
    optimizer = make_optimizer(model, recipe_rates("default"))
    generator = torch.Generator().manual_seed(1)

    def epoch(n_batches: int) -> dict:
        batches = TrainBatches(_pool(n_batches * batch), batch, generator, device)
        return train_one_epoch(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            batches,
            device=device,
            precision="bf16",
            augment="d4",
            generator=generator,
            progress=False,
        )

    started = time.perf_counter()
    epoch(suite["warmup_batches"])
    warmup_s = time.perf_counter() - started
    timed = epoch(suite["pool_batches"])
    return {
        "batch_size": batch,
        "compile": compile_model,
        "images_per_s": timed["images_per_s"],
        "images": timed["images"],
        "warmup_s": warmup_s,
    }


def infer_rate(device: Any, batch: int, tta: bool, suite: dict) -> dict:
    """Images/s of ``predict_split`` (softmax probabilities), with or without D4 averaging."""

    from lensing.core.rng import seed_everything
    from lensing.model.inference import predict_split
    from lensing.model.network import build_model, prepare_model

    seed_everything(0)
    model = prepare_model(build_model("none"), device)
    split = _pool(suite["infer_images"])
    options = {"device": device, "batch_size": batch, "precision": "bf16", "tta": tta}
    predict_split(model, (split[0][:batch], split[1][:batch]), **options)  # warm-up
    _sync(device)
    started = time.perf_counter()
    predict_split(model, split, **options)
    seconds = time.perf_counter() - started
    n = len(split[0])
    return {"batch_size": batch, "d4": tta, "images_per_s": n / seconds, "images": n}


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def full_run(device: Any, data: Path, out: Path, suite: dict) -> dict:
    """``fit`` on ``data`` for the suite's epochs, then the test split evaluated with D4."""
    import torch

    from lensing.data.dataset import LensingDataset
    from lensing.evaluation.evaluate import evaluate_checkpoint
    from lensing.model.checkpoint import BEST_MODEL
    from lensing.training.config import TrainConfig
    from lensing.training.fit import fit

    started = time.perf_counter()
    datasets = {split: LensingDataset(data, split, progress=False) for split in ("train", "val")}
    load_s = time.perf_counter() - started
    sizes = {split: len(ds) for split, ds in datasets.items()}
    log(f"full run: loaded {sizes} in {load_s:.1f} s; training {suite['epochs']} epochs")
    config = TrainConfig(
        data_dir=str(data),
        out_dir=str(out / "models"),
        epochs=suite["epochs"],
        batch_size=suite["batch_size"],
        pretrained="none",
        device=str(device),
        seed=0,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = fit(config, datasets=datasets, progress=False)
    train_s = time.perf_counter() - started
    history = result["history"]
    started = time.perf_counter()
    metrics = evaluate_checkpoint(
        data,
        out / "models" / BEST_MODEL,
        split="test",
        out_dir=out / "reports",
        tta=True,
        device=str(device),
        explain=False,
    )
    evaluate_s = time.perf_counter() - started
    rates = [entry["images_per_s"] for entry in history if "images_per_s" in entry]
    return {
        "data": str(data),
        "images": sizes,
        "test_images": _test_size(metrics),
        "epochs": len(history),
        "batch_size": config.batch_size,
        "load_s": load_s,
        "train_s": train_s,
        "evaluate_s": evaluate_s,
        "train_images_per_s_median": sorted(rates)[len(rates) // 2] if rates else None,
        "best_val_auc": result["best_val_auc"],
        "test_auc_macro": metrics["auc_macro"],
        "test_auc_macro_ci95": metrics.get("auc_macro_ci95"),
        "test_auc_per_class": metrics["auc_per_class"],
        "test_accuracy": metrics["accuracy"],
        "gpu_peak_memory_gb": (
            torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
        ),
    }


def _test_size(metrics: dict) -> int:
    return int(sum(sum(row) for row in metrics["confusion_matrix"]))


def device_info(device: Any) -> dict:
    import torch

    from benchmarks.common import cpu_model

    info = {
        "type": device.type,
        "name": cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "capability": None,
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def measure(device: Any, suite_name: str, data: Path | None, work: Path, parts: list[str]):
    """Every measurement of ``parts`` ("speed", "full"); returns the report written as JSON.

    work: where the full run writes its models and reports.
    """
    suite = SUITES[suite_name]
    report: dict[str, Any] = {
        "suite": suite_name,
        "device": device_info(device),
        "precision": "bf16",
        "channels_last": True,
        "image_size": IMAGE_SIZE,
        "aims": {"train_images_per_s": AIM_TRAIN_IMAGES_PER_S, "full_run_s": AIM_FULL_RUN_S},
    }
    if "speed" in parts:
        report["train"], report["inference"] = [], []
        for batch, compile_model in suite["train"]:
            log(f"train_one_epoch, batch {batch}, compile {'on' if compile_model else 'off'} ...")
            report["train"].append(train_rate(device, batch, compile_model, suite))
            log(f"  {report['train'][-1]['images_per_s']:,.0f} images/s")
        for tta in (False, True):
            log(f"predict_split, batch {suite['infer_batch']}, D4 {'on' if tta else 'off'} ...")
            report["inference"].append(infer_rate(device, suite["infer_batch"], tta, suite))
            log(f"  {report['inference'][-1]['images_per_s']:,.0f} images/s")
    if "full" in parts:
        if data is None:
            raise ValueError("the full run needs --data DIR (a set with train/ and val/)")
        report["full"] = full_run(device, data, work, suite)
    return report


def report_table(report: dict) -> str:
    """The figures as markdown, beside the aims."""
    lines = ["| measurement | batch | compile | images/s |", "|---|---|---|---|"]
    for r in report.get("train", []):
        compiled = "on" if r["compile"] else "off"
        lines.append(
            f"| train_one_epoch | {r['batch_size']} | {compiled} | {r['images_per_s']:,.0f} |"
        )
    for r in report.get("inference", []):
        name = "predict_split, D4 x8" if r["d4"] else "predict_split"
        lines.append(f"| {name} | {r['batch_size']} | off | {r['images_per_s']:,.0f} |")
    full = report.get("full")
    if full:
        lines += [
            "",
            f"{report['device']['name']}: {full['epochs']} epochs on {full['images']['train']:,} "
            f"training images (batch {full['batch_size']}) in {full['train_s']:.1f} s "
            f"(aim < {AIM_FULL_RUN_S:.0f} s), loading {full['load_s']:.1f} s, test evaluation "
            f"with D4 {full['evaluate_s']:.1f} s; test macro AUC {full['test_auc_macro']:.4f}, "
            f"accuracy {full['test_accuracy']:.4f}",
        ]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu",
        description="Training and inference images/s of the package's own loops on one CUDA "
        "device, and a full-size run of fit + evaluate.",
    )
    parser.add_argument(
        "--out", type=Path, default=REPORTS_DIR / "gpu_benchmark.json", help="(%(default)s)"
    )
    parser.add_argument("--data", type=Path, help="set for the full run (train/, val/)")
    parser.add_argument(
        "--work", type=Path, default=REPORTS_DIR / "gpu_work", help="the full run's models"
    )
    parser.add_argument("--parts", nargs="+", choices=("speed", "full"), default=["speed", "full"])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu with --tiny")
    parser.add_argument(
        "--tiny", action="store_true", help="batch 4, one short epoch, compile off (CI)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    kind = args.device.partition(":")[0]
    if kind not in ("cuda", "cpu") or (kind == "cpu" and not args.tiny):
        print(
            f"error: --device {args.device}{'' if args.tiny else ' without --tiny'}; expected "
            "a CUDA device, or cpu with --tiny (the full suite on a CPU would take hours)",
            file=sys.stderr,
        )
        return 2
    import torch

    if kind == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if kind == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    started = time.perf_counter()
    report = measure(device, "tiny" if args.tiny else "full", args.data, args.work, args.parts)
    report["seconds"] = time.perf_counter() - started
    report["command"] = "python -m benchmarks.gpu " + " ".join(argv or sys.argv[1:])
    atomic_write_json(args.out, report)
    print(report_table(report))
    print(f"\nreport: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
