"""Data-parallel throughput: the same tabular student trained by one process and by N gloo processes
(``resources.gpus: N`` on a CPU worker), same global batch and seed, in this process.

    .venv/bin/python -m bench.data_parallel [--ranks 2] [--epochs 4] [--batch-size 256] [--hidden 512 512]
        [--sharding ddp|fsdp|both]

``--sharding both`` also trains the N ranks sharded (FSDP) and prints its throughput against DDP's and each
rank's share of the training state (what sharding saves: FSDP's rank holds ``1/N`` of it).

Throughput is measured between the first and the last epoch's end as rank 0 reports them, so the ranks'
start-up (spawning, importing torch: a few seconds) is printed apart from it. Every rank runs with one
thread, so N ranks use N cores: on a machine with fewer free cores than ranks expect no gain. There is no
target: on CPU, data parallelism is how the GPU path is tested, not a way to go faster; on GPUs (NCCL) the
ratio is the figure to watch. Also prints the largest weight difference between the two runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Literal

import torch

from distill.datasets.builtins import load_builtin
from distill.spec import DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.distributed import DataParallel, training_state_bytes
from worker.engine.loop import NoCallbacks
from worker.engine.train import TrainInputs, train_model


class EpochClock(NoCallbacks):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_epoch(self, **_: object) -> None:
        self.ends.append(time.perf_counter())


def run(
    ranks: int, args: argparse.Namespace, inputs: TrainInputs, sharding: Literal["ddp", "fsdp"] = "ddp"
) -> tuple[float, float, torch.nn.Module]:
    """``(examples per second in steady state, seconds before the first step, model)``."""
    cfg = StoredModelConfig(
        model=MLPConfig(hidden=args.hidden),
        input_shape=inputs.train.input_shape,
        num_classes=int(inputs.train.y.max()) + 1 if inputs.train.y is not None else 10,
    )
    training = TrainingSpec(epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3, seed=0)
    parallel = DataParallel(world=ranks, backend="gloo", threads=1, sharding=sharding) if ranks > 1 else None
    clock = EpochClock()
    began = time.perf_counter()
    outcome = train_model(
        cfg, inputs, training, DistillationSpec(), None, torch.device("cpu"), clock, parallel=parallel
    )
    per_epoch = (clock.ends[-1] - clock.ends[0]) / (len(clock.ends) - 1)
    first_epoch = clock.ends[0] - began
    startup = max(0.0, first_epoch - per_epoch)
    return len(inputs.train) / per_epoch, startup, outcome.model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--sharding", choices=["ddp", "fsdp", "both"], default="ddp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        train, test = load_builtin("mnist1d", Path(tmp))
    inputs = TrainInputs(train=train, validation=test)
    one, one_start, one_model = run(1, args, inputs)
    modes: list[Literal["ddp", "fsdp"]] = ["ddp", "fsdp"] if args.sharding == "both" else [args.sharding]
    state_mb = training_state_bytes(one_model) / 2**20
    print(
        f"MNIST-1D, MLP{args.hidden}, global batch {args.batch_size}, {args.epochs} epochs, 1 thread per rank"
    )
    print(f"  1 process : {one:10,.0f} examples/s   (start-up {one_start:5.2f} s)   state {state_mb:.1f} MB")
    rates = {}
    for mode in modes:
        many, many_start, many_model = run(args.ranks, args, inputs, mode)
        rates[mode] = many
        pairs = zip(one_model.parameters(), many_model.parameters(), strict=True)
        diff = max((a - b).abs().max().item() for a, b in pairs)
        share = state_mb / args.ranks if mode == "fsdp" else state_mb
        print(
            f"  {args.ranks} processes, {mode}: {many:10,.0f} examples/s   (start-up {many_start:5.2f} s)   "
            f"state per rank {share:.1f} MB"
        )
        print(f"    ratio {args.ranks} / 1: {many / one:.2f}x   largest weight difference {diff:.2e}")
    if len(rates) == 2:
        print(f"  fsdp / ddp throughput: {rates['fsdp'] / rates['ddp']:.2f}x")


if __name__ == "__main__":
    main()
