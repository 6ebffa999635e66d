"""Data-parallel training on one node: several processes (*ranks*) train one model with PyTorch's
``DistributedDataParallel``, NCCL between GPUs, gloo between CPU processes.

How a run is laid out (the decisions, in one place):

- **Launcher.** The process that runs the job (a worker's task) is rank 0; it starts ranks ``1..N-1`` with
  ``torch.multiprocessing.start_processes(..., start_method="spawn")``, PyTorch's own launcher for
  processes of one node (what ``torchrun`` runs underneath for a Python function). ``torchrun``'s own
  additions, elastic restarts and a multi-node rendezvous, are what the job lease and the reconciler already
  do at job granularity, and a ``torchrun`` subprocess would have to re-load the job's inputs and report
  progress back over a channel of its own; spawning peers lets rank 0 keep the lease, the callbacks
  (progress, events, cancellation) and the checkpoint hook exactly as in a one-process run, and hands the
  peers the already loaded inputs and teacher signals (tensors through shared memory). Every kind of
  student trains this way: :func:`train_data_parallel` runs one training function (tabular's
  :func:`worker.engine.train.train_model`, the text trainings, :func:`worker.engine.lm_train.train_lm`) on
  every rank, rank 0 with the job's callbacks.
- **Rendezvous** through a ``file://`` store in a fresh temporary folder (no port to choose or to race for).
- **Devices.** GPU rank ``r`` sees only its own device (``CUDA_VISIBLE_DEVICES`` set to the worker's
  ``r``-th visible device before CUDA starts in that process); rank 0 trains on the worker's device.
- **Data.** Every rank draws the same seeded permutation of the pool each epoch and takes a disjoint shard
  of each global batch (``torch.tensor_split``: sizes differ by at most one), so a global batch is the
  ``training.batch_size`` of a one-process run. Each rank's mean loss is scaled by
  ``shard * world / batch`` before DDP averages the gradients, so the gradient is the one-process gradient
  of the whole batch even when the last batch does not split evenly (a rank whose shard is empty runs one
  example with weight 0 so that every rank joins the gradient all-reduce). A loss that is a mean over
  tokens (a causal LM's, :attr:`worker.engine.loop.Loop.weight`) is scaled by the shard's share of the
  global batch's tokens instead, so uneven token counts still give the whole batch's gradient. Losses that
  average over a subset of the batch (cross-entropy over the labeled examples when a transfer set is
  mixed in, a text attention term's mean over the real token pairs of texts of different lengths) are
  then averaged per shard: the same in expectation, not to the last bit.
- **Communication** is what DDP needs (one gradient all-reduce per optimizer step, skipped with
  ``no_sync`` between accumulated batches; no buffer broadcast: the models have no running statistics),
  plus one all-reduce of the loss sums per epoch (and at a mid-epoch checkpoint), the gradients of the
  objective's own parameters (hint projections) when there are any, and a one-element stop flag every
  :data:`worker.engine.loop.STOP_EVERY` batches so that a cancel stops every rank at the same batch.
- **Only rank 0** evaluates after each epoch, reports progress and events, and takes checkpoints (of the
  unwrapped model, so a checkpoint resumes with any number of ranks); every rank resumes from rank 0's
  state. The other ranks take part in the collectives only.

**Sharded (FSDP).** With ``sharding="fsdp"`` the student is wrapped with FSDP2's ``fully_shard`` (each
layer with parameters, then the whole model) instead of DDP: every rank holds ``1/world`` of each parameter,
its gradient and Adam's two moments, and gathers a layer's whole weights only around that layer's forward
and backward (one all-gather per layer and pass, and a reduce-scatter of its gradients instead of DDP's
all-reduce). The data layout, loss scaling and stop flag are DDP's. What changes:

- every rank takes part in the evaluation after each epoch (a sharded forward needs all of them; rank 0
  alone keeps and reports the metrics);
- a checkpoint gathers the whole model and optimizer state on every rank (to CPU memory) in the one-process
  layout, so it resumes with one process, DDP or FSDP, and a resumed state is re-sharded on each rank;
- the model :func:`worker.engine.train.train_model` returns is gathered whole on rank 0 at the end, for
  the job's final evaluation and export.

``sharding="auto"`` (the spec's default) picks FSDP when the student's training state (parameters,
gradients and Adam's two moments: 4x the parameters' bytes) does not fit one device: CUDA's free memory on
rank 0's device, or on CPU ranks ``DISTILL_WORKER_DEVICE_MEMORY_MB`` (0: no limit, so DDP).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import functools
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.multiprocessing.spawn import ProcessException
from torch.nn.parallel import DistributedDataParallel

from worker.engine.loop import Checkpoint, LoopState, NoCallbacks, TrainCallbacks, TrainingDiverged

T = TypeVar("T")
M = TypeVar("M", bound=nn.Module)

Sharding = Literal["auto", "ddp", "fsdp"]

ADAM_STATE_FACTOR = 4
"""Bytes of training state per byte of parameters: the parameter, its gradient and Adam's two moments."""


IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")
"""An optimizer's options that choose how its update runs, not what it computes."""


def training_state_bytes(model: nn.Module) -> int:
    """What training ``model`` with Adam holds on a device besides activations (see
    :data:`ADAM_STATE_FACTOR`); ``model`` may live on the meta device."""
    return ADAM_STATE_FACTOR * sum(p.numel() * p.element_size() for p in model.parameters())


def choose_sharding(needed_bytes: int, available_bytes: int | None) -> Literal["ddp", "fsdp"]:
    """``"fsdp"`` when the training state does not fit the memory one device offers (None: no limit)."""
    return "fsdp" if available_bytes is not None and needed_bytes > available_bytes else "ddp"


@dataclass(frozen=True)
class DataParallel:
    """How one job trains across the ranks of one node."""

    world: int
    """Number of processes (one per device)."""
    backend: str
    """``"nccl"`` (CUDA devices) or ``"gloo"`` (CPU processes)."""
    devices: tuple[str, ...] = ()
    """CUDA only: the device each rank uses, as ``CUDA_VISIBLE_DEVICES`` names it (rank 0's first)."""
    timeout_s: float = 600.0
    """How long a collective (or the rendezvous) waits for a missing rank before failing."""
    threads: int = 0
    """CPU ranks: torch threads per peer process (0: PyTorch's default)."""
    sharding: Sharding = "ddp"
    """``ddp``: every rank holds the whole model; ``fsdp``: each holds a shard of it; ``auto``: FSDP when the
    student's training state does not fit one device (:meth:`resolved`)."""
    memory_bytes: int = 0
    """CPU ranks, ``auto`` only: the memory one rank may give the student's training state (0: no limit).
    CUDA ranks use their device's free memory."""

    def describe(self) -> str:
        where = f"{self.world} CUDA devices" if self.backend == "nccl" else "CPU"
        # auto: not decided yet (the runner decides once the student's size is known; train_model else)
        shard = {"ddp": "", "fsdp": ", sharded with FSDP", "auto": ""}
        return f"data-parallel on {self.world} processes ({self.backend}, {where}{shard[self.sharding]})"

    def resolved(self, model: nn.Module, device: torch.device) -> DataParallel:
        """This layout with ``auto`` sharding decided for ``model`` (built, e.g. on the meta device, but not
        trained) on ``device``, rank 0's."""
        if self.sharding != "auto":
            return self
        if device.type == "cuda":
            available: int | None = torch.cuda.mem_get_info(device)[0]
        else:
            available = self.memory_bytes or None
        return dataclasses.replace(self, sharding=choose_sharding(training_state_bytes(model), available))


class PeerFailed(RuntimeError):
    """A rank other than 0 failed; the message carries its error."""


class RankGroup:
    """One rank's view of the run: which shard of a batch it trains on and the collectives :func:`fit`
    calls (see the module docstring)."""

    def __init__(self, rank: int, world: int, device: torch.device, sharding: Sharding = "ddp") -> None:
        if sharding == "auto":
            raise ValueError("a rank group trains with a decided sharding: DataParallel.resolved first")
        self.rank, self.world, self.device = rank, world, device
        self.sharded = sharding == "fsdp"
        self._ddp: DistributedDataParallel | None = None
        self._fsdp: FSDPModule | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def own(self, module: M) -> M:
        """This rank's copy of a module that reached it through :func:`train_data_parallel`'s arguments
        and that it trains: rank 0's own object, a deep copy on the other ranks (the spawn pickler hands them
        rank 0's tensors in shared memory: trained as they are, every rank would update the one set of
        weights)."""
        return module if self.is_main else copy.deepcopy(self.received(module))

    def received(self, module: M) -> M:
        """A module that reached this rank through :func:`train_data_parallel`'s arguments, ready to run
        (read-only: a teacher). ``transformers`` learns which outputs a model class can record (attention
        maps, hidden states) when an instance is constructed, in a registry of its process; a model that
        arrived by unpickling was never constructed here, so its classes are registered as that would have
        done."""
        if not self.is_main and "transformers" in sys.modules:
            _register_hf_outputs(module)
        return module

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` wrapped in DDP (its forward is what the step must call); parameters are broadcast from
        rank 0, so every rank starts from the same weights.

        Sharded: ``model`` itself is sharded in place (FSDP2: each submodule with parameters of its own,
        then the root) and returned; its parameters become new ``DTensor`` ones, so an optimizer must be
        built over them after this call. Every rank starts from rank 0's weights (broadcast first)."""
        if not self.sharded:
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
            return self._ddp
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor, src=0)
        mesh = init_device_mesh(self.device.type, (self.world,))
        for module in list(model.modules())[1:]:
            if any(True for _ in module.parameters(recurse=False)):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        assert isinstance(model, FSDPModule)
        self._fsdp = model
        return model

    def full_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sharded: the whole model and optimizer state, in the one-process layout (plain CPU tensors,
        the optimizer's state keyed by parameter index). A collective: every rank calls it, in step."""
        model_state = {k: _whole(v) for k, v in model.state_dict().items()}
        optimizer_state = optimizer.state_dict()
        return model_state, {
            "state": {i: {k: _whole(v) for k, v in s.items()} for i, s in optimizer_state["state"].items()},
            "param_groups": copy.deepcopy(optimizer_state["param_groups"]),
        }

    def load_full_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        model_state: dict[str, Any],
        optimizer_state: dict[str, Any],
    ) -> None:
        """Sharded: load a whole state (:meth:`full_state`'s or a one-process run's), each rank keeping its
        shard (every rank holds the whole state: no communication)."""
        params = dict(model.named_parameters())
        sharded = {k: _shard_like(params[k], v) if k in params else v for k, v in model_state.items()}
        model.load_state_dict(sharded)
        order = [p for group in optimizer.param_groups for p in group["params"]]
        state = {
            int(i): {k: _shard_like(order[int(i)], v) for k, v in s.items()}
            for i, s in optimizer_state["state"].items()
        }
        # the hyperparameters are the state's; how the update runs (fused or not...) stays this run's choice
        groups = copy.deepcopy(optimizer_state["param_groups"])
        for group, own in zip(groups, optimizer.param_groups, strict=True):
            group.update({k: own[k] for k in IMPLEMENTATION_FLAGS if k in own})
        optimizer.load_state_dict({"state": state, "param_groups": groups})

    def shard(self, indices: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """``(mine, scale, weight)``: this rank's share of a global batch, the factor its mean loss is
        multiplied by so that DDP's gradient average is the whole batch's gradient, and the number of
        examples its loss values count for."""
        mine = torch.tensor_split(indices, self.world)[self.rank]
        if len(mine) == 0:  # fewer examples than ranks: join the all-reduce with a zero gradient
            return indices[:1], 0.0, 0
        return mine, len(mine) * self.world / len(indices), len(mine)

    def no_sync(self, sync: bool) -> contextlib.AbstractContextManager[None]:
        """Within an accumulation group, no gradient all-reduce until its last batch."""
        if self._fsdp is not None:
            return _fsdp_gradient_sync(self._fsdp, sync)
        if sync or self._ddp is None:
            return contextlib.nullcontext()
        return self._ddp.no_sync()

    def agree_to_stop(self, stop: bool) -> bool:
        """True on every rank when any rank asks to stop (rank 0 holds the job's callbacks)."""
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def summed(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (a new tensor)."""
        total = values.detach().clone()
        dist.all_reduce(total)
        return total

    def average_gradients(self, module: nn.Module) -> None:
        """Average the gradients of parameters DDP does not own (the objective's projections)."""
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def _register_hf_outputs(module: nn.Module) -> None:
    """Register the recordable outputs of every Hugging Face model in ``module`` (see
    :meth:`RankGroup.received`)."""
    try:
        from transformers import PreTrainedModel
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # another transformers: outputs are recorded as that version does
        return
    for sub in module.modules():
        if isinstance(sub, PreTrainedModel):
            _CAN_RECORD_REGISTRY[sub] = sub._can_record_outputs


def _whole(value: Any) -> Any:
    """A sharded tensor gathered whole (a collective), on CPU; anything else as it is (copied)."""
    if isinstance(value, DTensor):
        return value.full_tensor().cpu()
    return value.detach().cpu().clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)


def _shard_like(param: torch.Tensor, value: Any) -> Any:
    """``value`` (whole) as this rank's shard of ``param``'s layout when ``param`` is sharded and ``value``
    has its whole shape (optimizer scalars such as Adam's step stay whole). Always a copy: the ranks'
    states share memory (a spawned rank's tensors arrive in shared memory), and the optimizer updates its
    state in place (a shared step count would advance once per rank)."""
    if not isinstance(value, torch.Tensor):
        return copy.deepcopy(value)
    if isinstance(param, DTensor) and value.shape == param.shape:
        return distribute_tensor(
            value.to(param.device_mesh.device_type, dtype=param.dtype).clone(),
            param.device_mesh,
            param.placements,
            src_data_rank=None,  # every rank holds the whole tensor: each slices its own shard
        )
    return value.detach().clone()


@contextlib.contextmanager
def _fsdp_gradient_sync(model: FSDPModule, sync: bool) -> Iterator[None]:
    if sync:
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def run_data_parallel(
    parallel: DataParallel,
    device: torch.device,
    main: Callable[[RankGroup], T],
    peer: Callable[[RankGroup], object],
) -> T:
    """Run ``main`` here as rank 0 and ``peer`` in ``parallel.world - 1`` spawned processes (``peer`` must
    pickle: a module-level function or a ``functools.partial`` of one). Returns what ``main`` returned once
    every peer has finished; a failing peer raises :class:`PeerFailed` with its error, and when ``main``
    raises, the peers are stopped."""
    folder = tempfile.mkdtemp(prefix="distill-ddp-")
    init_method = f"file://{os.path.join(folder, 'rendezvous')}"
    timeout = timedelta(seconds=parallel.timeout_s)
    with _children_allowed():
        context = mp.start_processes(
            _peer_entry,
            args=(parallel, init_method, peer),
            nprocs=parallel.world - 1,
            join=False,
            start_method="spawn",
        )
    try:
        if parallel.backend == "nccl":
            torch.cuda.set_device(device)
        dist.init_process_group(
            parallel.backend, init_method=init_method, rank=0, world_size=parallel.world, timeout=timeout
        )
        try:
            result = main(RankGroup(0, parallel.world, device, parallel.sharding))
            dist.barrier()  # every rank is past its last collective before any tears the group down
        finally:
            dist.destroy_process_group()
        _join(context, parallel.timeout_s)
        return result
    except BaseException as exc:
        # a collective that failed here means a peer failed first: its error is the one to report;
        # any other error is rank 0's own, and the peers are only stopped
        from_peer = _lost_a_peer(exc)
        failure = _stop(context, wait_s=30.0 if from_peer else 0.0)
        if from_peer and failure is not None:
            raise PeerFailed(failure) from exc
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def train_data_parallel(
    parallel: DataParallel,
    device: torch.device,
    train: Callable[..., T],
    callbacks: TrainCallbacks,
    *,
    state: LoopState | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
) -> T:
    """One training run on every rank: ``train(ranks=, device=, callbacks=, state=, checkpoint=,
    checkpoint_every=)`` here as rank 0, with the job's ``callbacks`` and ``checkpoint``, and in each spawned
    rank on that rank's device without them (a sharded run's peers help gather each checkpoint and discard
    it). ``train`` must pickle (a ``functools.partial`` of a module-level function); modules among its
    arguments reach the peers in shared memory with rank 0's (see :meth:`RankGroup.own`) and must be made
    ready with :func:`for_ranks` (on the CPU: a CUDA tensor would start CUDA in a peer before it claims its
    own device). Returns rank 0's result."""
    if parallel.sharding == "auto":
        raise ValueError("data-parallel training needs a decided sharding: DataParallel.resolved first")
    gathers = parallel.sharding == "fsdp" and checkpoint is not None
    peer = functools.partial(_train_peer, train, state, checkpoint_every, gathers)

    def main(ranks: RankGroup) -> T:
        return train(
            ranks=ranks,
            device=device,
            callbacks=callbacks,
            state=state,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
        )

    return run_data_parallel(parallel, device, main, peer)


def for_ranks(module: M) -> M:
    """``module``, in place, ready to be among :func:`train_data_parallel`'s arguments: on the CPU, and
    without the forward hooks ``transformers`` installs the first time a model is asked for its attention
    maps or hidden states (local functions, which do not pickle; the model is marked so that
    ``transformers`` installs them again when next asked). Rank 0's run moves it back to its device."""
    module.cpu()
    for sub in module.modules():
        for key, hook in list(sub._forward_hooks.items()):
            if getattr(hook, "__name__", "") == "output_capturing_hook":
                del sub._forward_hooks[key]
                sub._forward_hooks_with_kwargs.pop(key, None)
                sub._forward_hooks_always_called.pop(key, None)
        if getattr(sub, "_output_capturing_hooks_installed", False):
            setattr(sub, "_output_capturing_hooks_installed", False)  # noqa: B010 (nn.Module typing)
    return module


def _train_peer(
    train: Callable[..., object],
    state: LoopState | None,
    checkpoint_every: int,
    gathers: bool,
    ranks: RankGroup,
) -> None:
    """A spawned rank's part of :func:`train_data_parallel` (``gathers``: a sharded run whose rank 0
    checkpoints; this rank takes part in gathering each state and discards it)."""
    train(
        ranks=ranks,
        device=ranks.device,
        callbacks=NoCallbacks(),
        state=state,
        checkpoint=_discard if gathers else None,
        checkpoint_every=checkpoint_every,
    )


def _discard(state: LoopState) -> None:
    """A peer's checkpoint in a sharded run: it helped gather the state; rank 0 saves it."""


def _peer_entry(
    index: int, parallel: DataParallel, init_method: str, peer: Callable[[RankGroup], object]
) -> None:
    """A spawned rank (``index + 1``): claim its device, join the group, run ``peer``."""
    rank = index + 1
    _die_with_parent()
    if parallel.backend == "nccl":
        os.environ["CUDA_VISIBLE_DEVICES"] = parallel.devices[rank]
        torch.cuda.set_device(0)
        device = torch.device("cuda", 0)
    else:
        device = torch.device("cpu")
        if parallel.threads > 0:
            torch.set_num_threads(parallel.threads)
    dist.init_process_group(
        parallel.backend,
        init_method=init_method,
        rank=rank,
        world_size=parallel.world,
        timeout=timedelta(seconds=parallel.timeout_s),
    )
    try:
        try:
            peer(RankGroup(rank, parallel.world, device, parallel.sharding))
        except TrainingDiverged:
            pass  # every rank sees the same summed loss: rank 0 reports it for the job
        else:
            dist.barrier()
    finally:
        dist.destroy_process_group()
    # Done: end without the interpreter's teardown, where a gloo thread still joinable at exit sometimes
    # aborted a peer after a successful run (SIGABRT, "terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def _children_allowed() -> Iterator[None]:
    """Let a daemonic process start the ranks: Celery's prefork pool (``distill worker --concurrency N``)
    runs each task in a daemonic process, which ``multiprocessing`` forbids to have children so that none
    outlives it (and whose key, billiard's, the spawn pickler refuses: the same bytes go as the standard
    library's key). The ranks cannot outlive it either: rank 0 joins them, or stops them when it fails, and
    each takes a parent-death signal (:func:`_die_with_parent`)."""
    config: dict[str, object] = getattr(multiprocessing.current_process(), "_config", {})
    daemon, authkey = config.get("daemon"), config.get("authkey")
    if daemon:
        config["daemon"] = False
    standard_key = getattr(multiprocessing.process, "AuthenticationString", bytes)
    if isinstance(authkey, bytes) and not isinstance(authkey, standard_key):
        config["authkey"] = standard_key(authkey)
    try:
        yield
    finally:
        if daemon:
            config["daemon"] = daemon
        config["authkey"] = authkey


def _lost_a_peer(exc: BaseException) -> bool:
    """Whether rank 0's error is a collective that lost its peers (gloo and NCCL raise ``RuntimeError``
    or ``DistError`` naming themselves or the closed connection)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return type(exc) is RuntimeError and any(w in text for w in ("gloo", "NCCL", "Connection closed"))


def _die_with_parent() -> None:
    """Linux: a peer is killed when rank 0's process dies (a worker killed mid-job leaves no rank behind).
    gloo peers also fail at their next collective; an NCCL peer could otherwise wait out the timeout."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _join(context: mp.ProcessContext, timeout_s: float) -> None:
    """Wait for the peers (they finish right after rank 0); a failed one raises :class:`PeerFailed`."""
    try:
        finished = context.join(timeout=timeout_s)
    except ProcessException as exc:
        raise PeerFailed(_describe(exc)) from exc
    if not finished:
        raise PeerFailed(f"a training rank did not finish within {timeout_s:g} s of rank 0")


def _stop(context: mp.ProcessContext, wait_s: float) -> str | None:
    """Stop the peers after rank 0 failed, first waiting up to ``wait_s`` for a failed peer's error."""
    failure = None
    deadline = time.monotonic() + wait_s
    try:
        while not context.join(timeout=0.5) and time.monotonic() < deadline:
            pass
    except ProcessException as exc:
        failure = _describe(exc)
    for process in context.processes:
        if process.is_alive():
            process.terminate()
    for process in context.processes:
        process.join(timeout=10.0)
        if process.is_alive():
            process.kill()
    return failure


def _describe(exc: ProcessException) -> str:
    rank = exc.error_index + 1
    text = str(exc).strip().splitlines()
    last = text[-1] if text else type(exc).__name__
    return f"training rank {rank} failed: {last}"
