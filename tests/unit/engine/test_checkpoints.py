"""worker.checkpoints: a LoopState through bytes and back (model, optimizer, scheduler, RNG, position), and a
run resumed from the decoded bytes ends where the uninterrupted run ends."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from engine_support import Recorder, three_blobs

from distill.spec import DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from distill.storage import LocalStore, checkpoint_key, delete_checkpoints, list_checkpoints
from worker.checkpoints import UnreadableCheckpoint, decode, encode, key_of, resume_from
from worker.engine.loop import LoopState
from worker.engine.train import TrainInputs, train_model

CPU = torch.device("cpu")
CFG = StoredModelConfig(model=MLPConfig(hidden=[16], dropout=0.2), input_shape=[4], num_classes=3)
TRAINING = TrainingSpec(epochs=3, batch_size=16, learning_rate=0.01, seed=3)


def inputs() -> TrainInputs:
    return TrainInputs(train=three_blobs(100, 0), validation=three_blobs(40, 1))


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def run_states() -> tuple[torch.Tensor, list[LoopState]]:
    states: list[LoopState] = []
    whole = train_model(
        CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(),
        checkpoint=states.append, checkpoint_every=3,
    )  # fmt: skip
    return weights(whole.model), states


def test_a_state_survives_encode_and_decode_field_by_field() -> None:
    _, states = run_states()
    state = states[3]  # mid epoch 2: optimizer moments, a position, running totals
    back = decode(encode(state))
    assert (back.epoch, back.position, back.step) == (state.epoch, state.position, state.step)
    assert state.optimizer["state"]  # the optimizer has state tensors to carry
    for name in ("model", "optimizer", "scheduler", "shuffle", "rng", "totals", "history", "extra"):
        assert same(getattr(back, name), getattr(state, name)), name
    assert back.rng.dtype == torch.uint8


def test_a_run_resumed_from_decoded_bytes_ends_where_the_uninterrupted_run_ends() -> None:
    whole, states = run_states()
    for state in (states[3], states[2]):  # mid-epoch, and an epoch's end
        resumed = train_model(
            CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(), state=decode(encode(state))
        )
        assert torch.allclose(weights(resumed.model), whole, atol=1e-6)


def test_a_scheduler_state_goes_through_too() -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = LoopState(
        epoch=1, position=4, step=1, model=model.state_dict(), optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(), shuffle=torch.Generator().get_state(), rng=torch.get_rng_state(),
        totals=torch.zeros(2),
    )  # fmt: skip
    back = decode(encode(state))
    assert same(back.scheduler, scheduler.state_dict())
    again = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    assert back.scheduler is not None
    again.load_state_dict(back.scheduler)
    assert again.get_last_lr() == scheduler.get_last_lr()


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "blob",
    [b"", b"not a checkpoint", b"PK\x03\x04truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_bytes_that_are_not_a_checkpoint_are_refused(blob: bytes) -> None:
    with pytest.raises(UnreadableCheckpoint):
        decode(blob)


def test_an_object_that_would_run_code_is_refused_not_unpickled() -> None:
    buffer = io.BytesIO()
    torch.save({"format": 1, "model": Boom()}, buffer)
    with pytest.raises(UnreadableCheckpoint, match=r"(?i)weights_only|unsupported|global"):
        decode(buffer.getvalue())


def test_another_format_is_refused() -> None:
    buffer = io.BytesIO()
    torch.save({"format": 99}, buffer)
    with pytest.raises(UnreadableCheckpoint, match="format"):
        decode(buffer.getvalue())


def test_keys_list_and_delete_in_a_local_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _, states = run_states()
    for state in states[:3]:
        store.put_bytes(key_of("t1", "j1", state), encode(state))
    store.put_bytes(checkpoint_key("t1", "j2", 1, 0), b"x")  # another job: not listed
    (tmp_path / "tenants/t1/jobs/j1/checkpoints/.tmp-half").write_bytes(b"x")  # a write in progress
    found = list_checkpoints(store, "t1", "j1")
    assert [(c.step, c.epoch) for c in found] == [(3, 0), (6, 0), (7, 1)]
    assert all(c.bytes == len(store.get_bytes(c.key)) for c in found)
    assert found[-1].key.endswith("checkpoints/step-000000007-epoch-00001")
    assert delete_checkpoints(store, "t1", "j1") == 3
    assert list_checkpoints(store, "t1", "j1") == []
    assert [c.step for c in list_checkpoints(store, "t1", "j2")] == [1]


def test_resume_from_says_where_or_restarts_when_unreadable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    _, states = run_states()
    key = key_of("t1", "j1", states[2])
    store.put_bytes(key, encode(states[2]))
    resumed = resume_from(store, key, 2)
    assert resumed.state is not None and resumed.state.step == 7
    assert resumed.message == "resumed from checkpoint at epoch 1 step 7 (attempt 2)"
    store.put_bytes(key, b"corrupt")
    broken = resume_from(store, key, 3)
    assert broken.state is None and broken.level == "warning"
    assert "restarting from the beginning (attempt 3)" in broken.message
    missing = resume_from(store, checkpoint_key("t1", "j1", 99, 9), 3)
    assert missing.state is None and "could not be read" in missing.message
