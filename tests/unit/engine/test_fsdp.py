"""Sharded data-parallel training (FSDP2 ``fully_shard``, ``resources.sharding: "fsdp"``): two gloo
processes on CPU train what one process trains with the same global batch and seed; rank 0 alone reports;
its checkpoints hold the whole model and optimizer state in the one-process layout, so they resume with one
process, DDP or FSDP; ``auto`` shards exactly when the student's training state does not fit one device.

Tolerance: as with DDP (tests/unit/engine/test_distributed.py) the runs differ in the order of float sums
(each rank's shard mean, then the reduce-scatter's average) and in Adam's implementation (fused in one
process, the per-tensor one over sharded parameters): weights agree within 1e-5 (measured: ~7e-8).
"""

from __future__ import annotations

import logging

import pytest
import torch
from engine_support import BLOBS_MLP, TWO_RANKS, Recorder, blobs_teacher_signals, three_blobs, weights
from pydantic import ValidationError

from distill.nets import build_model
from distill.settings import Settings
from distill.spec import CNNConfig, DistillationSpec, JobSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.distributed import (
    ADAM_STATE_FACTOR,
    DataParallel,
    RankGroup,
    choose_sharding,
    training_state_bytes,
)
from worker.engine.loop import STOP_EVERY, LoopState
from worker.engine.objective import teacher_capture
from worker.engine.signals import compute_signals
from worker.engine.train import TrainInputs, pool_inputs, train_model
from worker.launch import data_parallel_for

CPU = torch.device("cpu")
FSDP = DataParallel(world=2, backend="gloo", timeout_s=120, threads=1, sharding="fsdp")
DDP = TWO_RANKS
TOLERANCE = 1e-5
# the MLP [4] -> 16 -> 3: (4 * 16 + 16) + (16 * 3 + 3) = 131 float32 parameters
MLP_STATE_BYTES = ADAM_STATE_FACTOR * 131 * 4


def test_two_sharded_gloo_processes_train_the_weights_one_process_trains() -> None:
    # 97 examples in batches of 16: the last batch holds one example, fewer than the ranks
    data = TrainInputs(train=three_blobs(97, 0), validation=three_blobs(40, 1))
    training = TrainingSpec(epochs=3, batch_size=16, learning_rate=0.01, seed=3)
    spec = DistillationSpec(temperature=2.0, alpha=0.7)
    one_rec, two_rec = Recorder(), Recorder()
    one = train_model(BLOBS_MLP, data, training, spec, blobs_teacher_signals(97), CPU, one_rec)
    two = train_model(BLOBS_MLP, data, training, spec, blobs_teacher_signals(97), CPU, two_rec, parallel=FSDP)

    assert not two.stopped
    # the returned student is whole and plain (rank 0 gathered it), usable after the ranks are gone
    assert all(type(p.data) is torch.Tensor for p in two.model.parameters())
    assert set(two.model.state_dict()) == set(one.model.state_dict())
    assert (weights(two.model) - weights(one.model)).abs().max().item() < TOLERANCE
    assert two_rec.steps == one_rec.steps and len(two_rec.steps) == 3 * 7  # rank 0 alone reports
    assert len(two_rec.epochs) == 3
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["train_loss"] - want["train_loss"]) < TOLERANCE
        assert abs(got["kd_loss"] - want["kd_loss"]) < TOLERANCE
        assert got["val_accuracy"] == want["val_accuracy"]  # evaluated through the sharded student


def test_a_sharded_runs_checkpoints_are_whole_and_resume_with_one_process_ddp_or_fsdp() -> None:
    # 101 examples: the last batch of 5 splits 3 / 2 between the ranks
    data = TrainInputs(train=three_blobs(101, 0), validation=three_blobs(40, 1))
    training = TrainingSpec(epochs=3, batch_size=16, learning_rate=0.01, seed=4)
    spec = DistillationSpec()
    one_states: list[LoopState] = []
    one = train_model(
        BLOBS_MLP,
        data,
        training,
        spec,
        None,
        CPU,
        Recorder(),
        checkpoint=one_states.append,
        checkpoint_every=3,
    )
    states: list[LoopState] = []
    train_model(
        BLOBS_MLP, data, training, spec, None, CPU, Recorder(),
        checkpoint=states.append, checkpoint_every=3, parallel=FSDP,
    )  # fmt: skip
    assert [(s.epoch, s.position) for s in states] == [(s.epoch, s.position) for s in one_states]
    mid = states[3]  # in the middle of epoch 2
    assert (mid.epoch, mid.position) == (2, 32)
    # the one-process layout: the model's keys and shapes, Adam's state by parameter index, plain tensors
    want = one_states[3]
    assert {k: v.shape for k, v in mid.model.items()} == {k: v.shape for k, v in want.model.items()}
    assert set(mid.optimizer["state"]) == set(want.optimizer["state"])
    for index, entry in want.optimizer["state"].items():
        for key, value in entry.items():
            got = mid.optimizer["state"][index][key]
            assert type(got) is torch.Tensor and got.shape == value.shape
            assert (got.float() - value.float()).abs().max().item() < TOLERANCE
    for key, value in want.model.items():
        assert (mid.model[key] - value).abs().max().item() < TOLERANCE
    assert abs(mid.totals[0].item() - want.totals[0].item()) < 1e-3  # both ranks' loss sums

    steps_taken = mid.optimizer["state"][0]["step"].item()
    moment = mid.optimizer["state"][0]["exp_avg"].clone()
    alone = train_model(BLOBS_MLP, data, training, spec, None, CPU, Recorder(), state=mid)
    ddp = train_model(BLOBS_MLP, data, training, spec, None, CPU, Recorder(), state=mid, parallel=DDP)
    fsdp = train_model(BLOBS_MLP, data, training, spec, None, CPU, Recorder(), state=mid, parallel=FSDP)
    # and the other way: a one-process checkpoint is re-sharded by an FSDP run
    resharded = train_model(BLOBS_MLP, data, training, spec, None, CPU, Recorder(), state=want, parallel=FSDP)
    for resumed in (alone, ddp, fsdp, resharded):
        assert (weights(resumed.model) - weights(one.model)).abs().max().item() < TOLERANCE
        assert [h["epoch"] for h in resumed.history] == [1.0, 2.0, 3.0]
        for got, expected in zip(resumed.history, one.history, strict=True):
            assert abs(got["train_loss"] - expected["train_loss"]) < TOLERANCE
    # the states handed to the ranks are not changed by their training (a spawned rank's tensors are in
    # shared memory; a shared step count once advanced once per rank and per step)
    assert mid.optimizer["state"][0]["step"].item() == steps_taken == 7 + 2
    assert torch.equal(mid.optimizer["state"][0]["exp_avg"], moment)


def test_a_cancel_stops_every_sharded_rank_within_a_few_batches() -> None:
    data = TrainInputs(train=three_blobs(400, 0), validation=three_blobs(40, 1))
    training = TrainingSpec(epochs=50, batch_size=8, learning_rate=0.01, seed=3)
    rec = Recorder(stop_after=5)
    outcome = train_model(BLOBS_MLP, data, training, DistillationSpec(), None, CPU, rec, parallel=FSDP)
    assert outcome.stopped
    assert 5 <= len(rec.steps) <= 5 + STOP_EVERY
    assert all(type(p.data) is torch.Tensor for p in outcome.model.parameters())


def test_a_hint_loss_with_its_learned_projection_trains_the_same_sharded() -> None:
    # the projection belongs to the objective and stays whole on every rank (its gradients averaged)
    data = TrainInputs(train=three_blobs(96, 0), validation=three_blobs(40, 1))
    torch.manual_seed(0)
    teacher = build_model(StoredModelConfig(model=CNNConfig(channels=[6]), input_shape=[4], num_classes=3))
    spec = DistillationSpec.model_validate(
        {
            "temperature": 2.0,
            "losses": [
                {"type": "hint", "student_layer": "2", "teacher_layer": "3"},
                {"type": "kd"},
                {"type": "ce", "weight": 0.5},
            ],
        }
    )
    signals = compute_signals([teacher], [1.0], pool_inputs(data), CPU, capture=teacher_capture(spec))
    training = TrainingSpec(epochs=2, batch_size=16, learning_rate=0.01, seed=2)
    one = train_model(BLOBS_MLP, data, training, spec, signals, CPU, Recorder())
    two = train_model(BLOBS_MLP, data, training, spec, signals, CPU, Recorder(), parallel=FSDP)
    assert (weights(two.model) - weights(one.model)).abs().max().item() < TOLERANCE
    for got, want in zip(two.history, one.history, strict=True):
        assert abs(got["hint_loss"] - want["hint_loss"]) < TOLERANCE


# -- the auto choice --


def test_the_training_state_counts_parameters_gradients_and_adams_two_moments() -> None:
    with torch.device("meta"):
        model = build_model(BLOBS_MLP)
    assert training_state_bytes(model) == MLP_STATE_BYTES == 4 * 131 * 4


def test_auto_shards_exactly_when_the_training_state_does_not_fit_one_device() -> None:
    assert choose_sharding(MLP_STATE_BYTES, None) == "ddp"  # no limit known
    assert choose_sharding(MLP_STATE_BYTES, MLP_STATE_BYTES) == "ddp"  # fits exactly
    assert choose_sharding(MLP_STATE_BYTES, MLP_STATE_BYTES - 1) == "fsdp"
    with torch.device("meta"):
        model = build_model(BLOBS_MLP)
    auto = DataParallel(world=2, backend="gloo", sharding="auto")
    assert auto.resolved(model, CPU).sharding == "ddp"  # a CPU worker without a memory setting
    for memory, chosen in ((MLP_STATE_BYTES, "ddp"), (MLP_STATE_BYTES - 1, "fsdp")):
        layout = DataParallel(world=2, backend="gloo", sharding="auto", memory_bytes=memory)
        assert layout.resolved(model, CPU).sharding == chosen
    for explicit in ("ddp", "fsdp"):  # asked for: kept, whatever the memory
        kept = DataParallel(world=2, backend="gloo", sharding=explicit, memory_bytes=1)  # type: ignore[arg-type]
        assert kept.resolved(model, CPU).sharding == explicit
    with pytest.raises(ValueError, match="resolved"):
        RankGroup(0, 2, CPU, "auto")


def test_an_auto_job_on_a_worker_with_little_memory_per_device_trains_sharded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = JobSpec.model_validate({"data": {"train": {"builtin": "digits"}}, "resources": {"gpus": 2}})
    assert job.resources.sharding == "auto"
    # DISTILL_WORKER_DEVICE_MEMORY_MB=1 holds 2**20 bytes: a [4] -> 256 x 256 -> 3 MLP needs ~1.1 MB
    settings = Settings(worker_devices=2, torch_threads=1, worker_device_memory_mb=1)
    layout = data_parallel_for(job, settings, CPU, "w1")
    assert layout is not None and (layout.sharding, layout.memory_bytes) == ("auto", 2**20)
    big = StoredModelConfig(model=MLPConfig(hidden=[256, 256]), input_shape=[4], num_classes=3)
    data = TrainInputs(train=three_blobs(64, 0), validation=three_blobs(16, 1))
    training = TrainingSpec(epochs=1, batch_size=16, seed=0)
    with caplog.at_level(logging.INFO, logger="worker.engine.train"):
        one = train_model(big, data, training, DistillationSpec(), None, CPU, Recorder())
        two = train_model(big, data, training, DistillationSpec(), None, CPU, Recorder(), parallel=layout)
    assert "sharded with FSDP" in caplog.text
    assert (weights(two.model) - weights(one.model)).abs().max().item() < TOLERANCE


def test_the_spec_names_resources_sharding_when_it_is_not_one_of_the_choices() -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(
            {"data": {"train": {"builtin": "digits"}}, "resources": {"gpus": 2, "sharding": "zero3"}}
        )
    (error,) = info.value.errors()
    assert error["loc"] == ("resources", "sharding")
    explicit = JobSpec.model_validate(
        {"data": {"train": {"builtin": "digits"}}, "resources": {"gpus": 2, "sharding": "fsdp"}}
    )
    layout = data_parallel_for(explicit, Settings(worker_devices=2), CPU, "w1")
    assert layout is not None and layout.sharding == "fsdp"
    assert layout.describe() == "data-parallel on 2 processes (gloo, CPU, sharded with FSDP)"
