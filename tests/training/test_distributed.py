"""Data-parallel training: each rank's share of an epoch, collectives, and real torchrun runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lensing.core import distributed
from lensing.core.metrics import compute_metrics
from lensing.data.batches import TrainBatches
from lensing.data.dataset import LensingDataset
from lensing.model.checkpoint import BEST_MODEL, CHECKPOINT, CONFIG_JSON, load_checkpoint
from lensing.model.inference import predict_split
from lensing.model.network import build_model

REPO = Path(__file__).resolve().parents[2]


class NumberedImages:
    """In-memory split whose image i is filled with the value i, so a batch names its items."""

    def __init__(self, n: int) -> None:
        self.images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2)
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.labels)


class NumberedFiles(NumberedImages):
    """The same split read item by item (no ``images``), as a DataLoader reads files."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._images, self.images = self.images, None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._images[i], int(self.labels[i])


def ids(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].long().tolist()


def rank_epochs(dataset, batch_size: int, world_size: int, seed: int = 0) -> list[list[list[int]]]:
    """One epoch of every rank: [rank][step] -> image ids, each rank with its own generator."""
    epochs = []
    for rank in range(world_size):
        batches = TrainBatches(
            dataset,
            batch_size,
            torch.Generator().manual_seed(seed),
            torch.device("cpu"),
            num_workers=0,
            rank=rank,
            world_size=world_size,
        )
        steps = [ids(images) for images, _ in batches]
        assert len(steps) == len(batches)
        epochs.append(steps)
    return epochs


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("n", [1, 7, 12, 13])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shares_are_equal_disjoint_up_to_the_padding_and_cover_the_epoch(n, world_size):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shares = [distributed.shard_epoch(order, r, world_size) for r in range(world_size)]
    per_rank = -(-n // world_size)
    assert [len(s) for s in shares] == [per_rank] * world_size
    together = torch.cat(shares).tolist()
    assert set(together) == set(order.tolist())  # the whole split
    # Padding wraps around the order: with N >= world size, exactly its first
    # (per_rank * world_size - N) indices come twice and all others once.
    pad = per_rank * world_size - n
    counts = Counter(together)
    assert counts == Counter((order.tolist() * world_size)[: per_rank * world_size])
    if pad < n:
        assert {i for i, c in counts.items() if c > 1} == set(order.tolist()[:pad])
        assert max(counts.values()) <= 2
    if world_size == 1:
        assert torch.equal(shares[0], order)


def test_shard_epoch_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 out of range"):
        distributed.shard_epoch(torch.arange(4), 2, 2)


@pytest.mark.parametrize("n, world_size", [(12, 2), (13, 2), (13, 3), (30, 4)])
def test_a_global_step_is_one_block_of_batch_times_world_images(n, world_size):
    batch_size = 4
    dataset = NumberedImages(n)
    epochs = rank_epochs(dataset, batch_size, world_size)
    steps = len(epochs[0])
    assert all(len(e) == steps for e in epochs), "every rank takes the same number of steps"
    per_rank = -(-n // world_size)
    assert steps == -(-per_rank // batch_size)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    padded = (order * world_size)[: per_rank * world_size]
    for step in range(steps):
        sizes = {len(e[step]) for e in epochs}
        assert len(sizes) == 1, "ranks step with equal batches"
        if step < steps - 1:
            assert sizes == {batch_size}
        glob = sorted(i for e in epochs for i in e[step])
        block = padded[step * batch_size * world_size : (step + 1) * batch_size * world_size]
        assert glob == sorted(block)  # global batch = per-rank batch x world size
    # One process sees the unpadded permutation in order, batch by batch.
    (alone,) = rank_epochs(dataset, batch_size * world_size, 1)
    assert [i for b in alone for i in b] == order


def test_files_read_by_a_dataloader_are_shared_like_the_in_memory_tensor():
    memory = rank_epochs(NumberedImages(13), 4, 2, seed=3)
    files = rank_epochs(NumberedFiles(13), 4, 2, seed=3)
    assert memory == files


def test_without_a_process_group_everything_is_one_process():
    world = distributed.current()
    assert (world.rank, world.world_size, world.distributed, world.is_main) == (0, 1, False, True)
    x = torch.arange(5.0)
    assert distributed.all_reduce(x) is x and distributed.gather_rows(x) is x
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.gather_objects(3) == [3]
    distributed.barrier()
    with distributed.process_group("cpu") as alone:
        assert not alone.distributed and not dist.is_initialized()
    assert distributed.shard_range(10, 0, 1) == (0, 10)
    assert [distributed.shard_range(7, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 7)]
    assert [distributed.shard_range(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]


# ----------------------------------------------------------------------------- collectives


def _collectives_worker(rank: int, world_size: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        n = 5  # shares of 3 and 2 rows
        start, stop = distributed.shard_range(n, rank, world_size)
        rows = torch.arange(start, stop, dtype=torch.float64)[:, None] * torch.ones(1, 3)
        gathered = distributed.gather_rows(rows)
        empty = distributed.gather_rows(torch.ones(rank, 2, dtype=torch.int64))  # 0 and 1 rows
        total = distributed.all_reduce(torch.tensor([rank + 1.0]))
        largest = distributed.all_reduce(torch.tensor([rank + 1.0]), "max")
        sent = distributed.broadcast_object({"from": rank})
        results[rank] = (gathered, empty, float(total), float(largest), sent)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_collectives_gather_uneven_shares_in_rank_order():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_collectives_worker, args=(2, free_port(), results), nprocs=2)
        results = dict(results)
    expected = torch.arange(5, dtype=torch.float64)[:, None] * torch.ones(1, 3)
    for rank in (0, 1):
        gathered, empty, total, largest, sent = results[rank]
        assert torch.equal(gathered, expected)
        assert torch.equal(empty, torch.ones(1, 2, dtype=torch.int64))
        assert (total, largest, sent) == (3.0, 2.0, {"from": 0})


# ----------------------------------------------------------------------------- CPU threads


@pytest.mark.parametrize(
    ("omp", "local_world_size", "cores", "threads"),
    [
        (None, 2, 8, 4),  # cores / N
        ("1", 2, 8, 4),  # torchrun's own OMP_NUM_THREADS=1 is replaced
        ("1", 3, 8, 2),  # rounded down
        ("1", 4, 2, 1),  # at least one
        ("3", 2, 8, None),  # a user's explicit setting is kept
    ],
)
def test_each_cpu_process_gets_cores_over_n_threads(
    monkeypatch, omp, local_world_size, cores, threads
):
    """process_group on the CPU: N processes of one machine share its cores."""
    env = {"RANK": "0", "WORLD_SIZE": str(local_world_size), "LOCAL_RANK": "0"}
    env |= {"LOCAL_WORLD_SIZE": str(local_world_size), "MASTER_ADDR": "127.0.0.1"}
    for name, value in (env | {"MASTER_PORT": "1", "OMP_NUM_THREADS": omp}).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    joined, set_to = [], []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: joined.append(a))
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a, **k: None)
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    with distributed.process_group("cpu"):
        pass
    assert joined == [("gloo",)]
    assert set_to == ([] if threads is None else [threads])


THREADS_SCRIPT = """
import json, os, torch
from lensing.core import distributed
with distributed.process_group("cpu") as world:
    records = distributed.gather_objects({"rank": world.rank, "threads": torch.get_num_threads()})
if world.is_main:
    print("THREADS", json.dumps(records))
"""


@pytest.mark.slow
def test_torchrun_processes_each_get_cores_over_n_threads(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--master-addr=127.0.0.1", f"--master-port={free_port()}", str(script)]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONPATH": path}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("THREADS ")]
    cores = len(os.sched_getaffinity(0))
    expected = [{"rank": r, "threads": max(1, cores // 2)} for r in (0, 1)]
    assert json.loads(line.removeprefix("THREADS ")) == expected


# ----------------------------------------------------------------------------- torchrun


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    data: Path, out: Path, *args: str, nproc: int = 2, check: bool = True
) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "lensing",
        "train",
        *("--data", str(data), "--out", str(out), "--batch-size", "4"),
        *("--pretrained", "none", "--precision", "fp32", "--device", "cpu", "--seed", "0"),
        *("--lr-early", "1e-3", "--lr-middle", "1e-3", "--lr-late", "1e-3", "--lr-fc", "1e-3"),
        *args,
    ]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if check:
        assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory, write_set) -> Path:
    # 15 validation images: the two ranks predict shares of 8 and 7.
    return write_set(tmp_path_factory.mktemp("ddp_data"), {"train": 11, "val": 5})


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, ddp_data):
    out = tmp_path_factory.mktemp("ddp") / "out"
    done = torchrun(ddp_data, out, "--epochs", "1")
    return out, done, load_checkpoint(out / CHECKPOINT)


@pytest.mark.slow
def test_torchrun_writes_one_checkpoint_and_best_model_from_rank_zero(one_epoch):
    out, done, checkpoint = one_epoch
    assert sorted(p.name for p in out.iterdir()) == sorted([BEST_MODEL, CHECKPOINT, CONFIG_JSON])
    assert done.stdout.count("best val AUC") == 1, "only rank 0 prints"
    assert done.stdout.count("epoch 1/1  train loss") == 1
    assert "2 processes x batch 4 = global batch 8" in done.stdout
    assert checkpoint["epoch"] == 1 and checkpoint["world_size"] == 2
    assert len(checkpoint["history"]) == 1
    # Each rank keeps its own augmentation stream, and both are saved.
    states = [s["generators"]["augment"] for s in checkpoint["rng_per_rank"]]
    assert len(states) == 2 and not torch.equal(states[0], states[1])
    assert torch.equal(checkpoint["rng"]["generators"]["augment"], states[0])


@pytest.mark.slow
def test_torchrun_val_auc_is_that_of_the_whole_split(one_epoch, ddp_data):
    out, _, checkpoint = one_epoch
    entry = checkpoint["history"][0]
    best = load_checkpoint(out / BEST_MODEL)
    assert best["epoch"] == 1 and best["val_auc"] == entry["val_auc"]
    model = build_model("none")
    model.load_state_dict(best["model"])
    val = LensingDataset(ddp_data, "val", progress=False)
    probs, labels = predict_split(model, val, device=torch.device("cpu"), precision="fp32")
    assert len(labels) == 15
    metrics = compute_metrics(labels, probs, n_bootstrap=0)
    assert entry["val_auc"] == pytest.approx(metrics["auc_macro"], abs=1e-6)
    assert entry["val_accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)))
    assert entry["val_loss"] == pytest.approx(loss, rel=1e-5)
    # The weights written are the DDP model's: rank 0's BatchNorm statistics included.
    assert torch.equal(best["model"]["bn1.running_mean"], checkpoint["model"]["bn1.running_mean"])


@pytest.mark.slow
def test_torchrun_resume_continues_from_the_last_epoch(one_epoch, ddp_data, tmp_path):
    first_out, _, first = one_epoch
    out = tmp_path / "out"
    out.mkdir()
    for name in (CHECKPOINT, BEST_MODEL, CONFIG_JSON):
        (out / name).write_bytes((first_out / name).read_bytes())
    done = torchrun(ddp_data, out, "--epochs", "2", "--resume")
    assert "epochs 2..2" in done.stdout and done.stdout.count("epoch 2/2  train loss") == 1
    checkpoint = load_checkpoint(out / CHECKPOINT)
    history = checkpoint["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first["history"][0]
    assert checkpoint["epoch"] == 2 and len(checkpoint["rng_per_rank"]) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted([BEST_MODEL, CHECKPOINT, CONFIG_JSON])


@pytest.mark.slow
def test_torchrun_resume_from_a_corrupt_checkpoint_fails_on_every_rank(ddp_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b"PK\x03\x04 half a zip")
    # Rank 0 reads the file; rank 1 must get its error instead of waiting for it forever.
    done = torchrun(ddp_data, out, "--epochs", "1", "--resume", check=False)
    assert done.returncode != 0
    for rank in (0, 1):
        assert f"error: rank {rank}: cannot read checkpoint {out / CHECKPOINT}" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT]


def whole_split_scores(weights: dict, val) -> tuple[float, float]:
    """(macro AUC, mean cross-entropy) of ``weights`` on the whole split, in one process."""
    model = build_model("none")
    model.load_state_dict(weights)
    probs, labels = predict_split(model, val, device=torch.device("cpu"), precision="fp32")
    loss = -np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)))
    return compute_metrics(labels, probs, n_bootstrap=0)["auc_macro"], float(loss)


@pytest.mark.slow
def test_a_torchrun_search_worker_trains_each_combination_on_every_rank(ddp_data, tmp_path):
    """Rank 1 trains the very combination rank 0 took, with its learning rates.

    Rank 1 writes nothing, but it leaves a trace: each epoch's validation gathers rank 1's
    predictions of its share of the split (7 of the 15 images), made with rank 1's own
    weights. Those weights equal rank 0's only if rank 1 took the same optimizer steps with
    the same learning rates from the same start; so the recorded val loss and AUC equal those
    of rank 0's saved weights scored on the whole split in one process only if both ranks
    trained the same combination. (One step at another learning rate moves rank 1's weights,
    and its share's predictions, far beyond the tolerance.)
    """
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps({"early": [1e-3, 3e-4], "middle": [1e-3], "late": [1e-3], "fc": [1e-3]})
    )
    out = tmp_path / "models"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        "-m",
        "lensing",
        "search",
        *("--data", str(ddp_data), "--out", str(out), "--epochs", "1", "--grid", str(grid)),
        *("--batch-size", "4", "--pretrained", "none", "--precision", "fp32", "--device", "cpu"),
    ]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"torchrun search failed:\n{done.stdout}\n{done.stderr}"
    study = optuna.load_study(study_name="lr_grid", storage=f"sqlite:///{out}/grid_search.db")
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted(t.params["lr_early"] for t in trials) == [3e-4, 1e-3]
    val = LensingDataset(ddp_data, "val", progress=False)
    for trial in trials:
        folder = out / "trials" / "lr_grid" / trial.user_attrs["key"]
        state = load_checkpoint(folder / CHECKPOINT)
        assert state["world_size"] == 2 and state["epoch"] == 1
        (entry,) = state["history"]
        best = load_checkpoint(folder / BEST_MODEL)
        assert {f"lr_{g}": rate for g, rate in best["params"].items()} == trial.params
        auc, loss = whole_split_scores(best["model"], val)
        assert entry["val_loss"] == pytest.approx(loss, rel=1e-5), trial.params
        assert entry["val_auc"] == pytest.approx(auc, abs=1e-6) == trial.value
