"""Data-parallel training (worker.engine.distributed): two gloo processes on CPU train what one process
trains with the same global batch and seed; rank 0 alone reports and checkpoints, its checkpoints resume
with one process or two; a cancel stops every rank; a failing rank fails the run with its error.

Tolerance: the two runs differ only in the order of float sums (each rank's mean over its shard, then DDP's
average), so weights agree to rounding after Adam's updates: within 1e-5 here (measured: ~1e-7).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from engine_support import (
    BLOBS_MLP,
    TWO_RANKS,
    Recorder,
    averaged_gradients,
    blobs_teacher_signals,
    three_blobs,
    weights,
)

from distill.nets import build_model
from distill.spec import CNNConfig, DistillationSpec, StoredModelConfig, TrainingSpec
from worker.engine.distributed import DataParallel, PeerFailed, RankGroup, run_data_parallel
from worker.engine.loop import STOP_EVERY, LoopState
from worker.engine.objective import teacher_capture
from worker.engine.signals import compute_signals
from worker.engine.train import SharedInputs, TrainInputs, pool_inputs, train_model

CPU = torch.device("cpu")
TWO = TWO_RANKS
TOLERANCE = 1e-5


def test_two_gloo_processes_train_the_weights_one_process_trains_with_the_same_global_batch() -> None:
    # 97 examples in batches of 16: the last batch holds one example, fewer than the ranks
    data = TrainInputs(train=three_blobs(97, 0), validation=three_blobs(40, 1))
    training = TrainingSpec(epochs=3, batch_size=16, learning_rate=0.01, seed=3)
    spec = DistillationSpec(temperature=2.0, alpha=0.7)
    one_rec, two_rec = Recorder(), Recorder()
    one = train_model(BLOBS_MLP, data, training, spec, blobs_teacher_signals(97), CPU, one_rec)
    two = train_model(BLOBS_MLP, data, training, spec, blobs_teacher_signals(97), CPU, two_rec, parallel=TWO)

    assert not two.stopped
    assert (weights(two.model) - weights(one.model)).abs().max().item() < TOLERANCE
    # rank 0 alone reports: one progress call per optimizer step, one epoch event per epoch
    assert two_rec.steps == one_rec.steps and len(two_rec.steps) == 3 * 7
    assert len(two_rec.epochs) == 3
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["train_loss"] - want["train_loss"]) < TOLERANCE  # every rank's loss counted once
        assert abs(got["kd_loss"] - want["kd_loss"]) < TOLERANCE
        assert got["val_accuracy"] == want["val_accuracy"]


def test_rank_0_checkpoints_and_its_state_resumes_with_one_process_or_two() -> None:
    # 101 examples: the last batch of 5 splits 3 / 2 between the ranks
    data = TrainInputs(train=three_blobs(101, 0), validation=three_blobs(40, 1))
    training = TrainingSpec(epochs=3, batch_size=16, learning_rate=0.01, seed=4)
    spec = DistillationSpec()
    one = train_model(BLOBS_MLP, data, training, spec, None, CPU, Recorder())
    states: list[LoopState] = []
    train_model(
        BLOBS_MLP, data, training, spec, None, CPU, Recorder(),
        checkpoint=states.append, checkpoint_every=3, parallel=TWO,
    )  # fmt: skip
    # 7 steps per epoch: after steps 3 and 6 of each epoch and at each epoch's end, as with one process
    assert [(s.epoch, s.position) for s in states][:4] == [(1, 48), (1, 96), (2, 0), (2, 32)]
    mid = states[3]  # in the middle of epoch 2: its loss sums are both ranks'
    assert set(mid.model) == set(one.model.state_dict())  # the unwrapped model's keys (no "module.")

    alone = train_model(BLOBS_MLP, data, training, spec, None, CPU, Recorder(), state=mid)
    again = train_model(BLOBS_MLP, data, training, spec, None, CPU, Recorder(), state=mid, parallel=TWO)
    for resumed in (alone, again):
        assert (weights(resumed.model) - weights(one.model)).abs().max().item() < TOLERANCE
        assert [h["epoch"] for h in resumed.history] == [1.0, 2.0, 3.0]
        for got, want in zip(resumed.history, one.history, strict=True):
            assert abs(got["train_loss"] - want["train_loss"]) < TOLERANCE


def test_a_cancel_seen_by_rank_0_stops_every_rank_within_a_few_batches() -> None:
    data = TrainInputs(train=three_blobs(400, 0), validation=three_blobs(40, 1))
    training = TrainingSpec(epochs=50, batch_size=8, learning_rate=0.01, seed=3)
    rec = Recorder(stop_after=5)
    began = time.monotonic()
    outcome = train_model(BLOBS_MLP, data, training, DistillationSpec(), None, CPU, rec, parallel=TWO)
    assert outcome.stopped
    assert 5 <= len(rec.steps) <= 5 + STOP_EVERY
    assert time.monotonic() - began < 100  # the peer ended too (the launcher joined it)


def test_a_failing_rank_fails_the_run_with_its_error() -> None:
    def main(ranks: RankGroup) -> None:
        dist.barrier()  # the peer never gets here

    layout = DataParallel(world=2, backend="gloo", timeout_s=30)
    with pytest.raises(PeerFailed, match="rank 1 failed: TypeError"):
        run_data_parallel(layout, CPU, main, functools.partial(divmod, 1))


RANK_0 = """
import sys
sys.path.insert(0, {support!r})
import torch
from engine_support import Recorder, averaged_gradients, three_blobs
from distill.nets import build_model
from distill.spec import CNNConfig, DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.distributed import DataParallel
from worker.engine.train import TrainInputs, train_model


class Announce(Recorder):
    def on_step(self, **kwargs):
        if not self.steps:
            print("training", flush=True)
        super().on_step(**kwargs)


if __name__ == "__main__":
    data = TrainInputs(train=three_blobs(400, 0), validation=three_blobs(40, 1))
    cfg = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=[4], num_classes=3)
    training = TrainingSpec(epochs=1000, batch_size=8, seed=0)
    layout = DataParallel(world=2, backend="gloo", timeout_s=600, threads=1)
    cpu = torch.device("cpu")
    train_model(cfg, data, training, DistillationSpec(), None, cpu, Announce(), parallel=layout)
"""


def children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid) and "spawn_main" in cmdline(int(status.parent.name)):
            found.append(int(status.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def running(pid: int) -> bool:
    try:
        state = next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line[:6] == "State:"
        )
    except (OSError, StopIteration):
        return False
    return "Z" not in state.split(":", 1)[1].split()[0]  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_other_ranks_end_when_rank_0s_process_is_killed_instead_of_waiting_out_the_timeout(
    tmp_path: Path,
) -> None:
    # gloo sees the closed connection at the next collective; the parent-death signal the peers set
    # (worker.engine.distributed._die_with_parent) also covers a peer that would not reach one (NCCL)
    script = tmp_path / "rank0.py"
    script.write_text(RANK_0.format(support=str(Path(__file__).parent)))
    rank0 = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert rank0.stdout is not None
        assert rank0.stdout.readline().strip() == b"training"  # both ranks are in the loop
        peers = children(rank0.pid)
        assert len(peers) == 1
        rank0.kill()  # as a worker killed mid-job: no cleanup runs in rank 0
        rank0.wait(timeout=10)
        deadline = time.monotonic() + 20
        while running(peers[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not running(peers[0])
    finally:
        if rank0.poll() is None:
            rank0.kill()


def test_the_objectives_own_parameters_get_the_ranks_average_gradient() -> None:
    # hint projections live outside the DDP-wrapped student: fit averages their gradients itself
    layout = DataParallel(world=2, backend="gloo", timeout_s=60)
    mine = run_data_parallel(
        layout,
        CPU,
        functools.partial(averaged_gradients, 2.0),
        functools.partial(averaged_gradients, 2.0),
    )
    assert mine == [3.0] * 8  # (2 * 1 + 2 * 2) / 2 for the 6 weights and 2 biases


def test_a_hint_loss_with_its_learned_projection_trains_the_same_in_two_processes() -> None:
    # the projection is a parameter of the objective, not of the DDP-wrapped student
    data = TrainInputs(train=three_blobs(96, 0), validation=three_blobs(40, 1))
    torch.manual_seed(0)
    teacher = build_model(StoredModelConfig(model=CNNConfig(channels=[6]), input_shape=[4], num_classes=3))
    spec = DistillationSpec.model_validate(
        {
            "temperature": 2.0,
            "losses": [
                {"type": "hint", "student_layer": "2", "teacher_layer": "3"},  # [16] -> [6, 2]
                {"type": "kd"},
                {"type": "ce", "weight": 0.5},
            ],
        }
    )
    signals = compute_signals([teacher], [1.0], pool_inputs(data), CPU, capture=teacher_capture(spec))
    training = TrainingSpec(epochs=2, batch_size=16, learning_rate=0.01, seed=2)
    one = train_model(BLOBS_MLP, data, training, spec, signals, CPU, Recorder())
    two = train_model(BLOBS_MLP, data, training, spec, signals, CPU, Recorder(), parallel=TWO)
    assert (weights(two.model) - weights(one.model)).abs().max().item() < TOLERANCE
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["hint_loss"] - want["hint_loss"]) < TOLERANCE


def test_the_inputs_reach_the_ranks_whole_through_shared_memory() -> None:
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import numpy as np

    from distill.datasets import ArrayDataset

    data = TrainInputs(
        train=three_blobs(20, 0), validation=three_blobs(8, 1), transfer=ArrayDataset(three_blobs(6, 2).x)
    )
    # pickled as torch.multiprocessing pickles a spawned rank's arguments (tensors: shared memory handles)
    back = pickle.loads(ForkingPickler.dumps(SharedInputs.of(data))).inputs()
    assert back.test is None and back.transfer is not None and back.transfer.y is None
    for got, want in ((back.train, data.train), (back.validation, data.validation)):
        assert np.array_equal(got.x, want.x) and got.y is not None and want.y is not None
        assert np.array_equal(got.y, want.y) and got.y.dtype == np.int64
    assert np.array_equal(back.transfer.x, data.transfer.x)  # type: ignore[union-attr]


def _ranks_from_a_pool_process(_: int) -> list[float]:
    layout = DataParallel(world=2, backend="gloo", timeout_s=60)
    job = functools.partial(averaged_gradients, 2.0)
    return run_data_parallel(layout, CPU, job, job)


def test_a_celery_prefork_pool_process_can_start_the_ranks() -> None:
    # `distill worker --concurrency 2` runs jobs in billiard's daemonic pool processes
    import billiard

    with billiard.Pool(1) as pool:
        assert pool.map(_ranks_from_a_pool_process, [0]) == [[3.0] * 8]
