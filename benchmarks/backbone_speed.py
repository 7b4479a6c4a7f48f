"""Training speed of the D4-equivariant backbone against ResNet18:
``python -m benchmarks.backbone_speed [--batch 64] [--steps N] [--precision bf16 fp32]``.

Both networks are trained side by side in one process on the same random (B, 1, 150, 150)
batch, channels_last, with the package's fused Adam over the four layer groups: forward,
backward and optimizer step (``benchmarks.speed.one_batch_epoch``, the "model alone" rate,
no data path). ResNet18 is ``build_model(pretrained="none")``; the equivariant network is
``lensing.model.equivariant.build_equivariant`` at ``--widths`` fields per stage. For each
precision the two alternate, ``--repeats`` times, each after its own warm-up, and the medians
are compared: the time ratio is the equivariant network's time per image over ResNet18's (1.0:
as fast; 2.0: twice as slow). Parameters and forward FLOPs per image are printed beside them.

Each rate is given twice: per wall-clock second, and per second of the process's CPU time. On a
shared machine the wall-clock rates move with the other jobs' load (the load average at start
is in the JSON); the alternation spreads that over both networks. The CPU-time rates are
steadier there, most with ``--threads 1`` (two threads that wait for each other on a busy
machine spin, and the spinning counts as CPU time). ``--out FILE`` also writes the figures and
the machine as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import log, machine, markdown_table, spread
from benchmarks.speed import CPU, one_batch_epoch
from lensing.core.atomic import atomic_write_json
from lensing.core.constants import D4_RESNET, IMAGE_SIZE, RESNET18
from lensing.core.rng import seed_everything
from lensing.model.equivariant import DEFAULT_WIDTHS, build_equivariant
from lensing.model.network import build_model, prepare_model
from lensing.training.config import TrainConfig
from lensing.training.optim import make_optimizer

# What a rate is measured against: images per wall-clock second, and per second of this
# process's CPU time (all its threads), which other jobs on the machine disturb less.
CLOCKS = {"wall": "images/s", "cpu": "images / CPU s"}


def backbones(widths: tuple[int, ...], group_pool: str = "max") -> dict[str, nn.Module]:
    """The two networks, randomly initialized from the same seed."""
    seed_everything(0)
    resnet = build_model("none")
    seed_everything(0)
    return {RESNET18: resnet, D4_RESNET: build_equivariant(widths=widths, group_pool=group_pool)}


def forward_gflops(model: nn.Module) -> float:
    """Floating-point operations (2 per multiply-add) of one image's forward pass, in G."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    model.train()
    return counter.get_total_flops() / 1e9


def measure(
    models: dict[str, nn.Module],
    *,
    batch: int,
    steps: int,
    warmup: int,
    repeats: int,
    precision: str,
) -> dict[str, dict[str, list[float]]]:
    """{"wall": {model: images/s}, "cpu": {model: images per CPU second}}, ``repeats`` values
    each, alternating which model goes first."""
    learning_rates = TrainConfig(pretrained="none").learning_rates()
    trainees = {}
    for name, model in models.items():
        model = prepare_model(model, CPU, channels_last=True, data_parallel=False)
        trainees[name] = (model, make_optimizer(model, learning_rates))
    options = dict(batch_size=batch, precision=precision)
    rates: dict[str, dict[str, list[float]]] = {
        clock: {name: [] for name in models} for clock in CLOCKS
    }
    for repeat in range(repeats):
        order = list(trainees) if repeat % 2 == 0 else list(reversed(trainees))
        for name in order:
            model, optimizer = trainees[name]
            if warmup:
                one_batch_epoch(model, optimizer, warmup, **options)
            cpu_start = time.process_time()
            wall = one_batch_epoch(model, optimizer, steps, **options)["images_per_s"]
            cpu = batch * steps / max(time.process_time() - cpu_start, 1e-9)
            rates["wall"][name].append(wall)
            rates["cpu"][name].append(cpu)
            log(
                f"{precision} repeat {repeat + 1}/{repeats}: {name} {wall:.1f} images/s, "
                f"{cpu:.1f} images per CPU second"
            )
    return rates


def speed_table(report: dict[str, Any]) -> str:
    """One row per precision and clock: the two rates (medians) and their time ratio."""
    rows = []
    for precision, entry in report["precisions"].items():
        for clock in CLOCKS:
            rates = entry[clock]
            resnet, d4 = rates[RESNET18]["median"], rates[D4_RESNET]["median"]
            rows.append([precision, CLOCKS[clock], resnet, d4, entry[f"{clock}_time_ratio"]])
    models = report["models"]
    title = (
        f"Training images/s on one random batch of {report['batch']} (forward + backward + "
        f"Adam), median of {report['repeats']} x {report['steps']} steps, "
        f"torch threads: {report['machine']['threads']}; "
        + "; ".join(
            f"{name}: {m['parameters'] / 1e6:.2f} M parameters, {m['forward_gflops']:.2f} "
            "GFLOP forward per image" + (f", widths {m['widths']}" if "widths" in m else "")
            for name, m in models.items()
        )
    )
    headers = ["precision", "clock", RESNET18, D4_RESNET, "time ratio d4 / resnet"]
    return f"{title}\n\n{markdown_table(headers, rows)}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The report: the models' sizes and, per precision, the rates and the time ratio."""
    models = backbones(tuple(args.widths), args.group_pool)
    report: dict[str, Any] = {
        "command": "python -m benchmarks.backbone_speed " + " ".join(args.argv),
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "machine": machine(),
        "models": {
            name: {
                "parameters": sum(p.numel() for p in model.parameters()),
                "forward_gflops": forward_gflops(model),
            }
            for name, model in models.items()
        },
        "precisions": {},
    }
    report["models"][D4_RESNET] |= {"widths": list(args.widths), "group_pool": args.group_pool}
    for precision in args.precision:
        rates = measure(
            models,
            batch=args.batch,
            steps=args.steps,
            warmup=args.warmup,
            repeats=args.repeats,
            precision=precision,
        )
        entry: dict[str, Any] = {}
        for clock, by_model in rates.items():
            entry[clock] = {name: spread(values) for name, values in by_model.items()}
            resnet, d4 = (entry[clock][name]["median"] for name in (RESNET18, D4_RESNET))
            entry[f"{clock}_time_ratio"] = resnet / d4
        report["precisions"][precision] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backbone_speed", description=__doc__
    )
    add = parser.add_argument
    add("--batch", type=int, default=64, help="images per step (%(default)s)")
    add("--steps", type=int, default=5, help="timed steps per measurement (%(default)s)")
    add("--warmup", type=int, default=1, help="untimed steps before each measurement")
    add("--repeats", type=int, default=2, help="measurements per model and precision")
    add("--precision", nargs="+", default=["bf16", "fp32"], choices=("bf16", "fp32"))
    add("--widths", nargs=4, type=int, default=list(DEFAULT_WIDTHS), help="fields per stage")
    add("--group-pool", default="max", choices=("max", "mean"))
    add("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add("--out", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if min(args.batch, args.steps, args.repeats, *args.widths) < 1 or args.warmup < 0:
        parser.error("--batch, --steps, --repeats and --widths must be >= 1, --warmup >= 0")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    args.argv = argv
    report = run(args)
    print(speed_table(report))
    if args.out is not None:
        atomic_write_json(args.out, report)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
