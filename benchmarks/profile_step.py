"""Where a training step's time goes: ``python -m benchmarks.profile_step [--precision P]``.

Profiles ``lensing.training.steps.train_one_epoch`` on one fixed in-memory batch (the "model alone"
measurement of :mod:`benchmarks.speed`, ``one_batch_epoch``) with ``torch.profiler`` and prints
the share of the step's CPU time spent in each kind of operator: convolution backward and
forward, batch norm, dtype casts and copies, the optimizer, and the rest. It answers "what
limits the speed now".
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from torch.profiler import ProfilerActivity, profile

from benchmarks.common import markdown_table
from benchmarks.speed import CPU, one_batch_epoch, our_model
from lensing.core.runtime import resolve_precision

# Operator kinds, matched in order against the profiler's aten operator names.
KINDS = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("mkldnn_convolution", "_convolution", "conv2d")),
    ("batch norm", ("batch_norm",)),
    ("casts and copies", ("copy_", "_to_copy")),
    ("optimizer (fused Adam)", ("_fused_adam",)),
)


def _kind(name: str) -> str:
    for kind, needles in KINDS:
        if any(needle in name for needle in needles):
            return kind
    return "other"


def profile_step(
    *, batch_size: int = 32, steps: int = 5, warmup: int = 3, precision: str = "auto"
) -> dict[str, Any]:
    """Profile ``steps`` training steps; returns {"precision", "batch_size", "steps",
    "images_per_s", "shares": {kind: share of the self CPU time}}."""
    precision = resolve_precision(precision, CPU)
    model, optimizer = our_model(batch_size)
    options = dict(batch_size=batch_size, precision=precision)
    one_batch_epoch(model, optimizer, warmup, **options)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rate = one_batch_epoch(model, optimizer, steps, **options)
    totals: dict[str, float] = {kind: 0.0 for kind, _ in KINDS} | {"other": 0.0}
    for event in prof.key_averages():
        totals[_kind(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {
        "precision": precision,
        "batch_size": batch_size,
        "steps": steps,
        "images_per_s": rate["images_per_s"],
        "shares": {kind: value / whole for kind, value in totals.items()},
    }


def profile_table(result: dict[str, Any]) -> str:
    rows = [[kind, f"{share:.0%}"] for kind, share in result["shares"].items()]
    title = (
        f"Self CPU time of a training step by operator kind: ResNet18, {result['precision']}, "
        f"batch {result['batch_size']}, {result['steps']} steps "
        f"({result['images_per_s']:.0f} images/s under the profiler)"
    )
    return f"{title}\n\n{markdown_table(['operators', 'share'], rows)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1:
        print("error: --batch-size and --steps must be >= 1", file=sys.stderr)
        return 2
    result = profile_step(batch_size=args.batch_size, steps=args.steps, precision=args.precision)
    print(profile_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
