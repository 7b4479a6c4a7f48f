"""GPU throughput of the training recipe: ``python -m benchmarks.gpu [--out FILE.json]``.

On one CUDA device it measures, for ResNet18 on 150 x 150 single-channel images
(``lensing.training.model.build_model("none")``, bf16 autocast, channels_last,
fused Adam, the images
already resident on the device so no loader is measured):

- training images/s at batch 256 and 512, with torch.compile off and on;
- inference images/s at batch 512, plain and with D4 averaging (``lensing.data.augment.d4_views``:
  8 forward passes per image);

and from the fastest training setting and the plain inference rate, the estimated wall time of
a 30-epoch run on 30,000 training images with 7,500 validation images each epoch, printed
beside the public anchor (about 3.5 minutes on one H200 with a per-file loader) and the aim
(under one minute). Each figure is a warm-up, then a few timed seconds between
``torch.cuda.synchronize()`` calls; the whole run takes about 3 minutes.

Without CUDA it says so on stderr and exits with 2. ``--device cpu --tiny`` runs the same code
path in seconds (batch 4, compile off) and writes the same JSON keys, for tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lensing.atomic import atomic_write_json
from lensing.constants import CLASSES, IMAGE_SIZE, REPORTS_DIR

ANCHOR_MINUTES = 3.5  # public figure: one H200, per-file DataLoader, same 30-epoch recipe
AIM_MINUTES = 1.0
RUN = {"epochs": 30, "train_images": 30_000, "val_images": 7_500}
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "train_batches": (256, 512),
        "compile": (False, True),
        "infer_batch": 512,
        "warmup_steps": 5,
        "compile_warmup_steps": 15,  # the first steps compile (forward and backward graphs)
        "measure_s": 3.0,
        "min_steps": 5,
    },
    "tiny": {
        "train_batches": (4,),
        "compile": (False,),
        "infer_batch": 4,
        "warmup_steps": 1,
        "compile_warmup_steps": 1,
        "measure_s": 0.5,
        "min_steps": 1,
    },
}
NO_CUDA = (
    "error: no CUDA device here (torch.cuda.is_available() is False); this benchmark measures "
    "a GPU. For a quick check of the code path on a CPU: --device cpu --tiny"
)


def _timed(step: Callable[[], None], warmup: int, profile: dict, sync: Callable) -> dict:
    """Run ``step`` ``warmup`` times, then repeatedly for about the profile's ``measure_s``
    seconds (at least ``min_steps`` times); returns steps and seconds."""
    for _ in range(warmup):
        step()
    sync()
    steps, start = 0, time.perf_counter()
    while steps < profile["min_steps"] or time.perf_counter() - start < profile["measure_s"]:
        step()
        steps += 1
    sync()
    return {"steps": steps, "seconds": time.perf_counter() - start}


def _pool(n: int, device: Any) -> tuple[Any, Any]:
    """``n`` random images (channels_last) and labels, resident on ``device``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(len(CLASSES), (n,), generator=generator)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    return images, labels.to(device)


def _model(device: Any, compile_model: bool) -> tuple[Any, Any]:
    import torch

    from lensing.training.model import build_model

    torch.manual_seed(0)
    model = build_model("none").to(device).to(memory_format=torch.channels_last)
    return model, (torch.compile(model) if compile_model else model)


def train_rate(device: Any, batch: int, compile_model: bool, profile: dict) -> dict:
    """Training images/s: forward and backward under bf16 autocast, then a fused Adam step."""
    import torch

    images, labels = _pool(2 * batch, device)
    model, run = _model(device, compile_model)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    offset = [0]

    def step() -> None:
        start = offset[0]
        offset[0] = (start + batch) % images.shape[0]
        x, y = images[start : start + batch], labels[start : start + batch]
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = loss_fn(run(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    warmup = profile["compile_warmup_steps" if compile_model else "warmup_steps"]
    timed = _timed(step, warmup, profile, _sync(device))
    rate = timed["steps"] * batch / timed["seconds"]
    return {"batch_size": batch, "compile": compile_model, "images_per_s": rate, **timed}


def infer_rate(device: Any, batch: int, d4: bool, profile: dict) -> dict:
    """Inference images/s (softmax probabilities); with ``d4`` averaged over the 8 views."""
    import torch

    from lensing.data.augment import d4_views

    images, _ = _pool(batch, device)
    model, run = _model(device, compile_model=False)
    model.eval()
    sink = []

    def step() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            views = d4_views(images) if d4 else [images]
            probs = sum(run(v).float().softmax(dim=1) for v in views) / len(views)
        sink[:] = [probs]  # kept, so no step's work can be skipped as unused

    timed = _timed(step, profile["warmup_steps"], profile, _sync(device))
    rate = timed["steps"] * batch / timed["seconds"]
    return {"batch_size": batch, "d4": d4, "images_per_s": rate, **timed}


def _sync(device: Any) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def estimate(train: list[dict], plain_inference: dict) -> dict:
    """Wall time of the 30-epoch run from the fastest training setting and plain inference."""
    best = max(train, key=lambda r: r["images_per_s"])
    epoch_s = RUN["train_images"] / best["images_per_s"]
    epoch_s += RUN["val_images"] / plain_inference["images_per_s"]
    minutes = RUN["epochs"] * epoch_s / 60
    return {
        **RUN,
        "best_train": {k: best[k] for k in ("batch_size", "compile", "images_per_s")},
        "epoch_seconds": epoch_s,
        "total_minutes": minutes,
        "anchor_minutes": ANCHOR_MINUTES,
        "aim_minutes": AIM_MINUTES,
        "speedup_vs_anchor": ANCHOR_MINUTES / minutes,
        "meets_aim": minutes < AIM_MINUTES,
    }


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


def run_benchmark(device: Any, profile_name: str, log: Callable[[str], None]) -> dict:
    """Every measurement of one profile; returns the report written as JSON."""
    profile = PROFILES[profile_name]
    started = time.perf_counter()
    train = []
    for compile_model in profile["compile"]:
        for batch in profile["train_batches"]:
            log(f"training, batch {batch}, compile {'on' if compile_model else 'off'} ...")
            train.append(train_rate(device, batch, compile_model, profile))
            log(f"  {train[-1]['images_per_s']:,.0f} images/s")
    inference = []
    for d4 in (False, True):
        log(f"inference, batch {profile['infer_batch']}, D4 {'on' if d4 else 'off'} ...")
        inference.append(infer_rate(device, profile["infer_batch"], d4, profile))
        log(f"  {inference[-1]['images_per_s']:,.0f} images/s")
    return {
        "profile": profile_name,
        "device": device_info(device),
        "precision": "bf16",
        "channels_last": True,
        "image_size": IMAGE_SIZE,
        "train": train,
        "inference": inference,
        "estimate": estimate(train, inference[0]),
        "seconds": time.perf_counter() - started,
    }


def report_table(report: dict) -> str:
    """The figures as markdown, the estimate beside the anchor and the aim."""
    lines = ["| measurement | batch | compile | images/s |", "|---|---|---|---|"]
    for r in report["train"]:
        compiled = "on" if r["compile"] else "off"
        lines.append(f"| train | {r['batch_size']} | {compiled} | {r['images_per_s']:,.0f} |")
    for r in report["inference"]:
        name = "inference, D4 x8" if r["d4"] else "inference"
        lines.append(f"| {name} | {r['batch_size']} | off | {r['images_per_s']:,.0f} |")
    e = report["estimate"]
    lines += [
        "",
        f"{report['device']['name']} ({report['profile']} profile): a {e['epochs']}-epoch run "
        f"on {e['train_images']:,} training + {e['val_images']:,} validation images takes "
        f"about {e['total_minutes']:.2f} min (public anchor ~{e['anchor_minutes']} min on one "
        f"H200 with a per-file loader; aim < {e['aim_minutes']:g} min: "
        f"{'met' if e['meets_aim'] else 'not met'})",
    ]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu",
        description="Training and inference images/s of the recipe on one CUDA device, and "
        "the time of a 30-epoch run estimated from them.",
    )
    parser.add_argument(
        "--out", type=Path, default=REPORTS_DIR / "gpu_benchmark.json", help="(%(default)s)"
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu with --tiny")
    parser.add_argument(
        "--tiny", action="store_true", help="batch 4, ~1 s per figure, compile off (tests)"
    )
    return parser


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    kind = args.device.partition(":")[0]
    if kind not in ("cuda", "cpu") or (kind == "cpu" and not args.tiny):
        print(
            f"error: --device {args.device}{'' if args.tiny else ' without --tiny'}; expected "
            "a CUDA device, or cpu with --tiny (the full profile on a CPU would take hours)",
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
    report = run_benchmark(device, "tiny" if args.tiny else "full", log=_stderr)
    report["command"] = "python -m benchmarks.gpu " + " ".join(argv or sys.argv[1:])
    atomic_write_json(args.out, report)
    print(report_table(report))
    print(f"\nreport: {args.out}")
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(cli())
