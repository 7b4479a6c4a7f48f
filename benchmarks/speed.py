"""Training throughput: the seed notebook's pipeline against the package's, and against the
model alone.

Three kinds of measurement, each a fixed number of optimizer steps after a warm-up, at the same
batch size and the same ResNet18:

- ``seed``: the notebook pipeline of :mod:`benchmarks.seed_pipeline` (one ``.npy`` file per
  image, 3 x 224 x 224, per-image torchvision transforms in DataLoader workers, fp32, Adam);
- ``ours``: the package's own training pieces (``TrainBatches`` over the in-memory split,
  ``train_one_epoch`` with batched augmentation, ``prepare_model``'s channels_last,
  ``make_optimizer``'s fused Adam) at native 150 x 150, one channel;
- ``model``: the same model, optimizer and ``train_one_epoch`` fed one fixed, already
  channels_last batch without augmentation: the model's own forward + backward + step rate,
  the ceiling of any data pipeline.

``train_speedup_vs_seed`` = ours / seed and ``pipeline_efficiency`` = ours / model, both at the
package's default precision; each measurement is repeated, alternating the order, and the
medians are compared.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from benchmarks.common import log, markdown_table, spread
from benchmarks.seed_pipeline import (
    build_seed_model,
    seed_loader,
    seed_optimizer,
    seed_train_steps,
)
from lensing.core.rng import seed_everything
from lensing.core.runtime import resolve_precision
from lensing.data.batches import TrainBatches
from lensing.model.network import build_model, prepare_model
from lensing.training.fit import TrainConfig
from lensing.training.optim import make_optimizer
from lensing.training.steps import train_one_epoch

CPU = torch.device("cpu")


def _forever(batches: Iterable) -> Iterator:
    """Batches of epoch after epoch (each pass re-shuffles)."""
    return itertools.chain.from_iterable(itertools.repeat(batches))


def seed_rate(
    files: list, labels: list[int], *, batch_size: int, steps: int, warmup: int, num_workers: int
) -> float:
    """Images per second of the seed pipeline's training loop, DataLoader included."""
    seed_everything(0)
    model = build_seed_model()
    optimizer = seed_optimizer(model)
    loader = seed_loader(files, labels, train=True, batch_size=batch_size, num_workers=num_workers)
    stream = _forever(loader)
    seed_train_steps(model, optimizer, stream, warmup)
    return seed_train_steps(model, optimizer, stream, steps)["images_per_s"]


def our_model(batch_size: int, compile_model: bool = False) -> tuple[nn.Module, Any]:
    """The package's ResNet18 (random init, channels_last, on the CPU) and its fused Adam."""
    seed_everything(0)
    model = prepare_model(build_model("none"), CPU, channels_last=True)
    optimizer = make_optimizer(model, TrainConfig(pretrained="none").learning_rates())
    if compile_model:
        model.compile()  # in place: the state_dict keeps its plain names
    return model, optimizer


def ours_rate(
    dataset: Any,
    *,
    batch_size: int,
    steps: int,
    warmup: int,
    precision: str,
    augment: str = "flip-affine",
    compile_model: bool = False,
) -> dict[str, float]:
    """Images per second of lensing.training.fit's loop over an in-memory split (augmentation and
    batching included), and the seconds of the warm-up steps (compilation included)."""
    model, optimizer = our_model(batch_size, compile_model)
    generator = torch.Generator().manual_seed(1)
    stream = _forever(TrainBatches(dataset, batch_size, torch.Generator().manual_seed(0), CPU))
    options = dict(
        device=CPU, precision=precision, augment=augment, generator=generator, progress=False
    )
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    train_one_epoch(model, criterion, optimizer, itertools.islice(stream, warmup), **options)
    warmup_seconds = time.perf_counter() - start
    timed = itertools.islice(stream, steps)
    rate = train_one_epoch(model, criterion, optimizer, timed, **options)["images_per_s"]
    return {"images_per_s": rate, "warmup_seconds": warmup_seconds}


def one_batch_epoch(
    model: nn.Module, optimizer: Any, steps: int, *, batch_size: int, precision: str
) -> dict[str, float]:
    """``train_one_epoch`` over ``steps`` repeats of one random in-memory batch: the model's
    forward, backward and optimizer step with no data path."""
    images = torch.rand(batch_size, 1, 150, 150).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 3, (batch_size,))
    batches = [(images, labels)] * steps
    return train_one_epoch(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        batches,
        device=CPU,
        precision=precision,
        augment="none",
        progress=False,
    )


def model_rate(
    *, batch_size: int, steps: int, warmup: int, precision: str, compile_model: bool = False
) -> float:
    """Images per second of forward + backward + optimizer step on one fixed in-memory batch."""
    model, optimizer = our_model(batch_size, compile_model)
    options = dict(batch_size=batch_size, precision=precision)
    one_batch_epoch(model, optimizer, warmup, **options)
    return one_batch_epoch(model, optimizer, steps, **options)["images_per_s"]


def run_speed(
    train_set: Any,
    *,
    batch_size: int = 32,
    steps: int = 10,
    warmup: int = 3,
    repeats: int = 2,
    num_workers: int = 2,
    precisions: tuple[str, ...] | None = None,
    compile_model: bool = False,
    thread_counts: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Measure seed, ours and model-only throughput, ``repeats`` times in alternating order.

    train_set: an in-memory LensingDataset (its ``files`` feed the seed pipeline, its
    ``images`` ours). precisions: those to measure ours and the model at; default the
    package's "auto" choice plus fp32 when they differ. compile_model: also measure ours at
    the default precision with ``torch.compile`` (and the compile time, first and cached).
    thread_counts: also measure the model alone at these ``torch.set_num_threads`` values.
    Returns the ``speed`` entry of benchmarks.json.
    """
    package_default = resolve_precision("auto", CPU)
    precisions = precisions or tuple(dict.fromkeys([package_default, "fp32"]))
    # The headline figures are at the package's default, or the first precision asked for.
    default = package_default if package_default in precisions else precisions[0]
    common = dict(batch_size=batch_size, steps=steps, warmup=warmup)
    compile_seconds: list[float] = []
    jobs = _speed_jobs(
        train_set,
        precisions,
        default,
        common,
        num_workers=num_workers,
        compile_seconds=compile_seconds if compile_model else None,
        thread_counts=thread_counts,
    )
    rates: dict[str, list[float]] = {name: [] for name in jobs}
    for repeat in range(repeats):
        order = list(jobs) if repeat % 2 == 0 else list(reversed(jobs))
        for name in order:
            rates[name].append(jobs[name]())
            log(f"speed repeat {repeat + 1}/{repeats}: {name} {rates[name][-1]:.1f} img/s")
    measured = {name: spread(values) for name, values in rates.items()}
    result: dict[str, Any] = {
        "batch_size": batch_size,
        "steps": steps,
        "warmup_steps": warmup,
        "repeats": repeats,
        "seed_num_workers": num_workers,
        "package_default_precision": package_default,
        "headline_precision": default,
        "images_per_s": measured,
    }
    result |= _speed_ratios(measured, rates, precisions, default)
    threads_now = result["threads"] = torch.get_num_threads()
    result["model_by_threads"] = {
        threads_now: measured[f"model_{default}"]["median"],
        **{
            n: measured[f"model_{default}_threads{n}"]["median"]
            for n in thread_counts
            if n != threads_now
        },
    }
    if compile_model:
        compiled = measured[f"ours_{default}_compiled"]["median"]
        result["compiled"] = {
            "train_speedup_vs_seed": compiled / measured["seed"]["median"],
            "speedup_vs_eager": compiled / measured[f"ours_{default}"]["median"],
            "warmup_seconds_with_compile": compile_seconds,
        }
    return result


def _speed_jobs(
    train_set: Any,
    precisions: tuple[str, ...],
    default: str,
    common: dict[str, int],
    *,
    num_workers: int,
    compile_seconds: list[float] | None,
    thread_counts: tuple[int, ...],
) -> dict[str, Any]:
    """name -> a function measuring images/s once. compile_seconds: None for no compiled
    measurement, else a list the compiled one appends its warm-up (compile) seconds to."""
    files, labels = list(train_set.files), train_set.labels.tolist()
    jobs = {"seed": lambda: seed_rate(files, labels, num_workers=num_workers, **common)}
    for p in precisions:
        jobs[f"ours_{p}"] = lambda p=p: ours_rate(train_set, precision=p, **common)["images_per_s"]
        jobs[f"model_{p}"] = lambda p=p: model_rate(precision=p, **common)
    if compile_seconds is not None:

        def compiled() -> float:
            measured = ours_rate(train_set, precision=default, compile_model=True, **common)
            compile_seconds.append(measured["warmup_seconds"])
            return measured["images_per_s"]

        jobs[f"ours_{default}_compiled"] = compiled
    for n in thread_counts:
        if n != torch.get_num_threads():
            jobs[f"model_{default}_threads{n}"] = lambda n=n: _with_threads(
                n, lambda: model_rate(precision=default, **common)
            )
    return jobs


def _speed_ratios(
    measured: dict[str, dict[str, Any]],
    rates: dict[str, list[float]],
    precisions: tuple[str, ...],
    default: str,
) -> dict[str, Any]:
    """The speed-ups over the seed pipeline and the pipeline efficiencies of the medians."""
    seed = measured["seed"]["median"]

    def median(name: str) -> float:
        return measured[name]["median"]

    return {
        "train_speedup_vs_seed": median(f"ours_{default}") / seed,
        "pipeline_efficiency": median(f"ours_{default}") / median(f"model_{default}"),
        # Back-to-back pairs: the spread of the ratio under the machine's changing load.
        "train_speedup_per_repeat": [
            o / r for o, r in zip(rates[f"ours_{default}"], rates["seed"], strict=True)
        ],
        "by_precision": {
            p: {
                "train_speedup_vs_seed": median(f"ours_{p}") / seed,
                "pipeline_efficiency": median(f"ours_{p}") / median(f"model_{p}"),
                "model_speedup_vs_seed": median(f"model_{p}") / seed,
            }
            for p in precisions
        },
    }


def _with_threads(n: int, measure: Any) -> float:
    """``measure()`` with torch using ``n`` threads, then the old setting back."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return measure()
    finally:
        torch.set_num_threads(before)


def speed_table(result: dict[str, Any]) -> str:
    """Markdown table of a run_speed result."""
    rates = result["images_per_s"]
    seed = rates["seed"]["median"]
    rows = [
        [
            "seed pipeline (files, 3x224x224, per-image transforms, fp32)",
            rates["seed"]["median"],
            f"{rates['seed']['min']:.1f}-{rates['seed']['max']:.1f}",
            1.0,
            "",
        ]
    ]
    for precision, derived in result["by_precision"].items():
        ours, model = rates[f"ours_{precision}"], rates[f"model_{precision}"]
        default = " (default)" if precision == result["headline_precision"] else ""
        rows.append(
            [
                f"ours, {precision}{default} (in memory, 1x150x150, batched augmentation)",
                ours["median"],
                f"{ours['min']:.1f}-{ours['max']:.1f}",
                ours["median"] / seed,
                derived["pipeline_efficiency"],
            ]
        )
        rows.append(
            [
                f"model alone, {precision} (one fixed batch, no data path)",
                model["median"],
                f"{model['min']:.1f}-{model['max']:.1f}",
                model["median"] / seed,
                "",
            ]
        )
    if "compiled" in result:
        compiled = rates[f"ours_{result['headline_precision']}_compiled"]
        rows.append(
            [
                f"ours, {result['headline_precision']}, torch.compile (warm-up incl. compile "
                + ", ".join(f"{s:.0f}" for s in result["compiled"]["warmup_seconds_with_compile"])
                + " s)",
                compiled["median"],
                f"{compiled['min']:.1f}-{compiled['max']:.1f}",
                compiled["median"] / seed,
                "",
            ]
        )
    for n, rate in result.get("model_by_threads", {}).items():
        if n != result["threads"]:
            rows.append(
                [
                    f"model alone, {result['headline_precision']}, {n} thread(s) instead of "
                    f"{result['threads']}",
                    rate,
                    "",
                    rate / seed,
                    "",
                ]
            )
    title = (
        f"Training throughput, ResNet18, batch {result['batch_size']}, {result['steps']} steps "
        f"after {result['warmup_steps']} warm-up, median of {result['repeats']}"
    )
    table = markdown_table(["pipeline", "images/s", "range", "x seed", "of model rate"], rows)
    return f"{title}\n\n{table}"


if __name__ == "__main__":
    from benchmarks.suite import main_only

    sys.exit(main_only("speed"))
