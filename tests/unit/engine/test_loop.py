"""worker.engine.loop.fit: the one training loop (resume, checkpoints, accumulation, cancellation)."""

from __future__ import annotations

import torch
from engine_support import Recorder, three_blobs

from distill.spec import DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.loop import Loop, LoopState, fit, stack_values
from worker.engine.train import TrainInputs, train_model

CPU = torch.device("cpu")
# dropout draws from torch's global RNG: a resumed run must restore it to match
CFG = StoredModelConfig(model=MLPConfig(hidden=[16], dropout=0.2), input_shape=[4], num_classes=3)
TRAINING = TrainingSpec(epochs=3, batch_size=16, learning_rate=0.01, seed=3)


def inputs() -> TrainInputs:
    return TrainInputs(train=three_blobs(100, 0), validation=three_blobs(40, 1))


def weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_run_resumed_from_a_mid_run_state_ends_where_the_uninterrupted_run_ends() -> None:
    states: list[LoopState] = []
    whole = train_model(
        CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(),
        checkpoint=states.append, checkpoint_every=3,
    )  # fmt: skip
    # 7 steps per epoch: states after steps 3 and 6 of each epoch, and one at each epoch's end
    assert [(s.epoch, s.position) for s in states][:4] == [(1, 48), (1, 96), (2, 0), (2, 32)]
    mid = states[3]  # in the middle of epoch 2
    rec = Recorder()
    resumed = train_model(CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, rec, state=mid)
    assert torch.allclose(weights(resumed.model), weights(whole.model), atol=1e-6)
    assert [h["epoch"] for h in resumed.history] == [1.0, 2.0, 3.0]
    for got, want in zip(resumed.history, whole.history, strict=True):
        assert abs(got["train_loss"] - want["train_loss"]) < 1e-5
        assert got["val_accuracy"] == want["val_accuracy"]
    assert rec.steps[0][2] == mid.step + 1 and rec.steps[-1][2] == 21  # progress goes on from the state


def test_resuming_from_an_epoch_end_state_also_matches() -> None:
    states: list[LoopState] = []
    whole = train_model(
        CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(), checkpoint=states.append
    )
    assert [(s.epoch, s.position) for s in states] == [(2, 0), (3, 0), (4, 0)]
    resumed = train_model(CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(), state=states[0])
    assert torch.allclose(weights(resumed.model), weights(whole.model), atol=1e-6)


def linear_loop(batch_size: int, accumulate: int) -> tuple[torch.nn.Module, Loop]:
    data = three_blobs(64, 2)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        return loss, stack_values(loss)

    loop = Loop(
        model=model,
        optimizer=optimizer,
        step=step,
        keys=["loss"],
        evaluate=lambda: {},
        examples=64,
        epochs=2,
        batch_size=batch_size,
        seed=0,
        learning_rate=0.5,
        accumulate=accumulate,
    )
    return model, loop


def test_gradient_accumulation_over_two_batches_equals_one_batch_twice_the_size() -> None:
    big_model, big = linear_loop(batch_size=16, accumulate=1)
    small_model, small = linear_loop(batch_size=8, accumulate=2)
    rec_big, rec_small = Recorder(), Recorder()
    fit(big, rec_big)
    fit(small, rec_small)
    assert len(rec_big.steps) == len(rec_small.steps) == 8  # optimizer steps, not batches
    assert torch.allclose(weights(big_model), weights(small_model), atol=1e-5)


def test_no_checkpoint_callback_no_state_and_cancellation_stops_at_once() -> None:
    model, loop = linear_loop(batch_size=8, accumulate=1)
    rec = Recorder(stop_after=5)
    out = fit(loop, rec)
    assert out.stopped and out.steps == 5 and out.history == []
    assert not model.training


def test_each_epoch_reports_the_learning_rate_after_the_scheduler_and_the_throughput() -> None:
    _, loop = linear_loop(batch_size=8, accumulate=1)
    loop.scheduler = torch.optim.lr_scheduler.StepLR(loop.optimizer, step_size=8, gamma=0.1)  # 8 steps/epoch
    rec = Recorder()
    out = fit(loop, rec)
    assert [round(lr, 6) for lr, _ in rec.rates] == [0.05, 0.005]
    assert all(rate is not None and rate > 0 for _, rate in rec.rates)
    # the rates are the event's, not the history's: a resumed run's history equals an uninterrupted one's
    assert all("learning_rate" not in h and "throughput" not in h for h in out.history)


def test_resuming_leaves_the_state_unchanged_so_it_resumes_again_to_the_same_weights() -> None:
    # Optimizer.load_state_dict keeps the state's tensors; training must not update the LoopState in place
    # (the data-parallel ranks share one through shared memory, and a state may be resumed twice)
    states: list[LoopState] = []
    train_model(
        CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(),
        checkpoint=states.append, checkpoint_every=3,
    )  # fmt: skip
    mid = states[3]
    saved = {k: v.clone() for k, v in mid.optimizer["state"][0].items()}
    first = train_model(CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(), state=mid)
    assert all(torch.equal(mid.optimizer["state"][0][k], v) for k, v in saved.items())
    second = train_model(CFG, inputs(), TRAINING, DistillationSpec(), None, CPU, Recorder(), state=mid)
    assert torch.equal(weights(first.model), weights(second.model))
