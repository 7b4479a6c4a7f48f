"""Classifying image files with a trained model, one CSV row per file.

Its command line, ``python -m lensing predict INPUT...`` (options and exit codes), is
:mod:`lensing.cli.predict`.

INPUTs are image files (``.npy``, ``.fits``, ``.fit``, ``.fits.gz``) and folders, searched
recursively (:func:`lensing.data.readers.image.find_images`). Every file gets a row: ``path``,
``predicted`` (a class name), ``p_no``, ``p_sphere``, ``p_vort`` (summing to 1), then
``pc_no``, ``pc_sphere``, ``pc_vort`` when the checkpoint holds a fitted ``temperature``
(softmax(log p / T), T applied as stored, whether it was fitted with TTA or without), then
``error`` (why the file could not be classified; empty when it was), ``notes`` (what was
done to its pixels: filled, resampled; and each statistic on which the image lies outside the
training images, e.g. "zero-pixel share 0.44 (training <= 0.0013)", see
:mod:`lensing.data.ood`) and ``in_distribution`` (True when no statistic is outside,
False when one is; empty for a refused file and when the checkpoint holds no training profile,
whose rows say so in ``notes``). Nothing is refused for lying outside: it is a warning that
travels with the prediction. A file that cannot be classified never stops the run. Images are
read and classified a batch at a time, so memory follows ``--batch-size``, not the number of
files. The checkpoint's input stretch is applied, so a file's probabilities are those
``evaluate`` computes for the same image at the same precision.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lensing.core.atomic import atomic_write_bytes
from lensing.core.constants import CLASSES, IMAGE_SIZE
from lensing.core.progress import bar
from lensing.core.runtime import pick_device, resolve_precision
from lensing.data import ood
from lensing.data.readers.image import (
    NOTE_FILLED,
    NOTE_RESAMPLED,
    ImageError,
    find_images,
    read_image,
)
from lensing.data.stretch import stretch_of
from lensing.evaluation.calibration import apply_temperature, logits_from_probs
from lensing.model.inference import batch_probabilities, load_trained_model

PROB_COLUMNS = tuple(f"p_{name}" for name in CLASSES)
CALIBRATED_COLUMNS = tuple(f"pc_{name}" for name in CLASSES)


def classify_files(
    checkpoint: str | Path,
    inputs: str | Path | Sequence[str | Path],
    *,
    tta: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    precision: str = "auto",
    hdu: int | str | None = None,
    fill_nonfinite: bool = False,
    resize: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Class probabilities of every image file under ``inputs``, one row per file.

    Parameters
    ----------
    checkpoint: a ``best_model.pth`` written by training (``load_trained_model``).
    inputs: a file or folder, or a list of them; folders are searched recursively.
    tta: average over the 8 rotations and flips of each image (8 times the work).
    batch_size: images read and classified at once (int >= 1); bounds the memory used.
    device: "auto", "cpu", "cuda[:N]", "mps" or a torch.device.
    precision: one of ``config.PRECISIONS`` ("auto": bf16 where native, else fp32).
    hdu, fill_nonfinite, resize: how files are read (see
            ``lensing.data.readers.image.read_image``).
    progress: show a progress bar when there is more than one batch.

    Returns
    -------
    DataFrame with the columns of the module docstring, in the order ``find_images`` lists
    the files, then one row per problem it met (missing input, FIFO, symlink loop, ...).
    Probabilities are float64 and NaN, ``predicted`` empty, on a row with an ``error``.
    Raises CheckpointError or ValueError when the checkpoint cannot be used, ValueError for a
    bad argument.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size {batch_size!r}; expected an int >= 1")
    torch_device = pick_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, torch_device)
    model, state = load_trained_model(checkpoint)
    model.to(torch_device).eval()
    temperature = checkpoint_temperature(state)
    profile = ood.profile_of(state)
    files, problems = find_images(
        inputs if isinstance(inputs, str | os.PathLike) else list(inputs)
    )
    read_options = {"hdu": hdu, "fill_nonfinite": fill_nonfinite, "resize": resize}
    chunks = range(0, len(files), batch_size)
    shown = bar(
        chunks,
        enabled=progress and len(chunks) > 1,
        total=len(chunks),
        unit="batch",
        desc=f"predicting {len(files)} files",
    )
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for start in shown:
            batch = files[start : start + batch_size]
            rows += _classify_batch(
                model, batch, read_options, state, torch_device, precision, tta, profile
            )
    rows += [_refused_row(path, reason) for path, reason in problems]
    return _frame(rows, temperature)


def checkpoint_temperature(state: dict[str, Any]) -> float | None:
    """The softmax temperature a checkpoint holds (fitted on validation by ``evaluate``), or
    None when it holds none or one that is not a finite number > 0."""
    value = state.get("temperature")
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def write_predictions(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as CSV (no index; NaN as empty; floats in full precision) atomically:
    ``path`` is either its old whole self or the new whole file. Returns the path."""
    text = frame.to_csv(index=False, lineterminator="\n")
    return atomic_write_bytes(path, text.encode())


def summary_line(frame: pd.DataFrame) -> str:
    """One line: how many files were classified and refused, the count per predicted class,
    and how many were resized or had pixels filled."""
    refused = int((frame["error"] != "").sum())
    counts = frame["predicted"].value_counts()
    per_class = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in CLASSES)
    notes = frame["notes"].str.split("; ")
    resized = int(notes.map(lambda ns: any(n.startswith(NOTE_RESAMPLED) for n in ns)).sum())
    filled = int(notes.map(lambda ns: any(n.startswith(NOTE_FILLED) for n in ns)).sum())
    return (
        f"classified {len(frame) - refused} of {len(frame)} files, {refused} refused; "
        f"predicted {per_class}; {resized} resized, {filled} with non-finite pixels filled"
    )


def distribution_line(frame: pd.DataFrame) -> str:
    """One line: how many of the classified files lie outside the training data, and on which
    statistics (``lensing.data.ood.summary_line``), or that the checkpoint cannot say."""
    read = frame[frame["error"] == ""]
    return ood.summary_line(ood.summarize(notes.split("; ") for notes in read["notes"]))


def _classify_batch(
    model, paths, read_options, state, device, precision, tta, profile
) -> list[dict]:
    """The rows of one batch of files: read each, classify and check those that could be read
    (``profile``: the checkpoint's training profile, or None)."""
    rows, arrays, read_rows = [], [], []
    for path in paths:
        try:
            read = read_image(path, **read_options)
        except ImageError as err:
            rows.append(_refused_row(path, err.reason))
            continue
        row = {"path": str(path), "predicted": "", "error": "", "notes": "; ".join(read.notes)}
        rows.append(row)
        arrays.append(read.array)
        read_rows.append(row)
    if arrays:
        images = torch.from_numpy(np.stack(arrays)).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        probs = batch_probabilities(model, images, device, precision, tta, stretch_of(state))
        checks = ood.check_inputs(profile, images)
        for row, p, outside in zip(read_rows, probs.cpu().numpy(), checks, strict=True):
            row["predicted"] = CLASSES[int(np.argmax(p))]
            row.update(zip(PROB_COLUMNS, p.tolist(), strict=True))
            row["notes"] = "; ".join(filter(None, [row["notes"], *outside]))
            row["in_distribution"] = None if profile is None else not outside
    return rows


def _refused_row(path: Path, reason: str) -> dict[str, Any]:
    return {
        "path": str(path),
        "predicted": "",
        "error": reason,
        "notes": "",
        "in_distribution": None,
    }


def _frame(rows: list[dict[str, Any]], temperature: float | None) -> pd.DataFrame:
    """The rows as a DataFrame with the columns in order, calibrated ones added when known."""
    columns = ["path", "predicted", *PROB_COLUMNS, "error", "notes", "in_distribution"]
    frame = pd.DataFrame(rows, columns=columns)
    frame[list(PROB_COLUMNS)] = frame[list(PROB_COLUMNS)].astype(np.float64)
    frame["in_distribution"] = frame["in_distribution"].astype(object)  # True, False or None
    if temperature is not None:
        probs = frame[list(PROB_COLUMNS)].to_numpy()
        calibrated = np.full_like(probs, np.nan)
        ok = ~np.isnan(probs).any(axis=1)
        if ok.any():
            calibrated[ok] = apply_temperature(logits_from_probs(probs[ok]), temperature)
        for i, column in enumerate(CALIBRATED_COLUMNS):
            frame.insert(frame.columns.get_loc("error"), column, calibrated[:, i])
    return frame
