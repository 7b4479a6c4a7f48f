"""Classifying image files with a trained model, one CSV row per file.

Its command line, ``python -m lensing predict INPUT...`` (options and exit codes), is
:mod:`lensing.cli.predict`.

INPUTs are image files (``.npy``, ``.fits``, ``.fit``, ``.fits.gz``) and folders, searched
recursively (:func:`lensing.data.readers.image.find_images`). Every file gets a row: ``path``,
``predicted`` (a class name), ``p_no``, ``p_sphere``, ``p_vort`` (summing to 1), then the
calibrated ``pc_no``, ``pc_sphere``, ``pc_vort`` when a temperature T is known for the
checkpoint (softmax(log p / T), T applied as recorded, whether it was fitted with TTA or
without; see "Which temperature" below), then
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

Which temperature (:func:`choose_temperature`): ``evaluate`` writes the temperature it fits on
the validation split to ``calibration.json`` in its output folder, with the SHA-256 of the
checkpoint file; the checkpoint itself is never changed. The first of these that applies gives
T:

1. the calibration file named (``--calibration FILE``; one that cannot be read is an error), or
   else the first of ``calibration.json`` beside the checkpoint and ``reports/calibration.json``
   (:data:`lensing.core.constants.REPORTS_DIR`), provided its ``checkpoint_sha256`` is the
   SHA-256 of this very checkpoint file; a file of another checkpoint (retrained, copied
   from elsewhere) is passed over, and the run says so;
2. a ``temperature`` stored inside the checkpoint, as versions of ``evaluate`` before
   ``calibration.json`` did;
3. none: the probabilities are uncalibrated and there are no ``pc_`` columns.

The frame's ``attrs["temperature"]`` holds the :class:`Temperature` applied, and
:func:`calibration_line` says in words which one it was, or that there was none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lensing.core.atomic import atomic_write_bytes
from lensing.core.constants import CLASSES, IMAGE_SIZE, PREDICT_BATCH, REPORTS_DIR
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
from lensing.evaluation.calibration import (
    CALIBRATION_JSON,
    apply_temperature,
    checkpoint_sha256,
    logits_from_probs,
    read_calibration,
    stored_temperature,
)
from lensing.model.inference import batch_probabilities, load_trained_model

PROB_COLUMNS = tuple(f"p_{name}" for name in CLASSES)
CALIBRATED_COLUMNS = tuple(f"pc_{name}" for name in CLASSES)


def predict_files(
    checkpoint: str | Path,
    inputs: str | Path | Sequence[str | Path],
    *,
    calibration: str | Path | None = None,
    tta: bool = False,
    batch_size: int = PREDICT_BATCH,
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
    calibration: the ``calibration.json`` whose temperature gives the ``pc_`` columns; None:
        the one beside the checkpoint, else ``reports/calibration.json`` (module docstring).
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
    ``attrs["temperature"]``: the :class:`Temperature` applied (``calibration_line``).
    Raises CheckpointError or ValueError when the checkpoint cannot be used, ValueError for a
    bad argument or a named calibration file that cannot be read.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size {batch_size!r}; expected an int >= 1")
    torch_device = pick_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, torch_device)
    model, state = load_trained_model(checkpoint)
    model.to(torch_device).eval()
    temperature = choose_temperature(checkpoint, state, calibration)
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
            rows += _predict_batch(
                model, batch, read_options, state, torch_device, precision, tta, profile
            )
    rows += [_refused_row(path, reason) for path, reason in problems]
    frame = _frame(rows, temperature.value)
    frame.attrs["temperature"] = temperature
    return frame


@dataclass(frozen=True)
class Temperature:
    """The softmax temperature predictions are calibrated with, and where it came from.

    value: T > 0, or None: uncalibrated (no ``pc_`` columns).
    source: the calibration file T was read from, "checkpoint" (stored inside it by an older
        ``evaluate``), or "" when there is none.
    fitted_on: how T was fitted, in words ("val, 300 images, with TTA"), or "".
    passed_over: one sentence per calibration file found but not used, saying why.
    """

    value: float | None
    source: str = ""
    fitted_on: str = ""
    passed_over: tuple[str, ...] = ()


def choose_temperature(
    checkpoint: str | Path, state: dict[str, Any], calibration: str | Path | None = None
) -> Temperature:
    """The temperature for ``checkpoint`` (whose loaded record is ``state``), by the rule of
    the module docstring: a calibration file fitted for this very file (``calibration``, or
    None: ``default_calibration_files``), else one stored in the checkpoint, else none.

    Raises ValueError when the named ``calibration`` file cannot be read or is not one.
    """
    named = calibration is not None
    candidates = [Path(calibration)] if named else default_calibration_files(checkpoint)
    passed_over, sha256 = [], None
    for path in candidates:
        if not named and not path.is_file():
            continue
        try:
            record = read_calibration(path)
        except ValueError as error:
            if named:
                raise
            passed_over.append(f"ignored {path}: {error}")
            continue
        sha256 = sha256 or checkpoint_sha256(checkpoint)
        if record["checkpoint_sha256"] == sha256:
            return Temperature(
                stored_temperature(record), str(path), _fitted_on(record), tuple(passed_over)
            )
        passed_over.append(
            f"ignored {path}: fitted for another checkpoint file (SHA-256 "
            f"{record['checkpoint_sha256'][:12]}..., {record.get('checkpoint', '?')}); "
            f"{checkpoint} has {sha256[:12]}..."
        )
    stored = stored_temperature(state)
    source = "checkpoint" if stored is not None else ""
    return Temperature(stored, source, _fitted_on(state) if stored else "", tuple(passed_over))


def default_calibration_files(checkpoint: str | Path) -> list[Path]:
    """Where predict looks for a calibration file when none is named: ``calibration.json``
    beside the checkpoint, then in ``reports/`` (``evaluate``'s default ``--out``)."""
    beside = Path(checkpoint).parent / CALIBRATION_JSON
    reports = REPORTS_DIR / CALIBRATION_JSON
    return [beside] if beside.resolve() == reports.resolve() else [beside, reports]


def calibration_line(frame: pd.DataFrame) -> str:
    """One line (two or more when calibration files were passed over): which temperature the
    ``pc_`` columns of ``frame`` (from ``predict_files``) use, or that there are none."""
    temperature = frame.attrs.get("temperature") or Temperature(None)
    lines = list(temperature.passed_over)
    columns = ", ".join(CALIBRATED_COLUMNS)
    if temperature.value is None:
        lines.append(
            "probabilities uncalibrated (no temperature for this checkpoint; `python -m lensing "
            f"evaluate` fits one): no {columns} columns"
        )
        return "\n".join(lines)
    where = (
        "stored in the checkpoint"
        if temperature.source == "checkpoint"
        else f"from {temperature.source}"
    )
    how = f" (fitted on {temperature.fitted_on})" if temperature.fitted_on else ""
    lines.append(f"calibrated with temperature {temperature.value:.4g} {where}{how}: {columns}")
    return "\n".join(lines)


def _fitted_on(record: dict[str, Any]) -> str:
    """How a temperature was fitted, in words, from a calibration file's record or a
    checkpoint's (``temperature_tta``); "" when it does not say."""
    tta = record.get("tta", record.get("temperature_tta"))
    n = record.get("n_images")
    words = [str(record.get("split") or ("val" if tta is not None else ""))]
    words += [f"{n} images"] if isinstance(n, int) else []
    words += [] if tta is None else ["with TTA" if tta else "without TTA"]
    return ", ".join(word for word in words if word)


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


def _predict_batch(
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
