"""``distill demo``: the whole service on this machine, end to end, in one command.

It starts ``distill standalone`` (API + worker, SQLite, filesystem queue, local folder store) in a fresh
``DISTILL_HOME``, creates an API key, and through the SDK:

1. uploads an unlabeled transfer set: extra MNIST-1D inputs drawn with another seed than the builtin set;
2. trains a CNN teacher on the builtin MNIST-1D;
3. trains a small MLP student from scratch on the labels, and
4. distils the same student from the teacher on the transfer set (Hinton et al., 2015);

then compares the three (accuracy, size, CPU speed), writes ``results.json`` and downloads the distilled
student with its report and training curves (``curves.svg``). Everything worth tuning is in the
constants below.

(Over 500 lines: the demo is one script a newcomer reads top to bottom: start the service, the three jobs,
the comparison and the downloads, with its messages; split, it would read as a puzzle.)
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import TaskID
from rich.table import Table

from distill.cli.ui import JobBars, fmt_num, fmt_pct
from distill.client.sdk import Client, DistillError, JSONDict
from distill.schemas import JobRead
from distill.spec import JobSpec

# -- what the demo trains (tune here) -----------------------------------------------------------------------

DATASET: JSONDict = {"builtin": "mnist1d"}
TEACHER_MODEL: JSONDict = {"arch": "cnn", "channels": [32, 64, 64], "kernel_size": 5}
TEACHER_TRAINING: JSONDict = {"epochs": 30, "batch_size": 64, "learning_rate": 0.003}
STUDENT_MODEL: JSONDict = {"arch": "mlp", "hidden": [64]}
STUDENT_TRAINING: JSONDict = {"epochs": 40, "batch_size": 128, "learning_rate": 0.003}
"""Shared by the student from scratch and the distilled student (same seed: a like-for-like comparison)."""
DISTILLATION: JSONDict = {"temperature": 4.0, "alpha": 0.9}

TRANSFER_SIZE = 50_000
"""Unlabeled MNIST-1D inputs in the transfer set (all of ``x`` and ``x_test`` of a generated dataset)."""
TRANSFER_SEED = 2024
"""mnist1d's default seed (42) makes the builtin set; another seed gives fresh inputs."""

TEACHER_SPEC: JSONDict = {
    "name": "demo-teacher",
    "data": {"train": DATASET},
    "model": TEACHER_MODEL,
    "training": TEACHER_TRAINING,
}
STUDENT_SPEC: JSONDict = {
    "name": "demo-student-scratch",
    "data": {"train": DATASET},
    "model": STUDENT_MODEL,
    "training": STUDENT_TRAINING,
}


def distilled_spec(teacher_job_id: str, transfer_file_id: str) -> JSONDict:
    """The student of ``STUDENT_SPEC``, distilled from the teacher job on the uploaded transfer set."""
    return {
        "name": "demo-student-distilled",
        "data": {"train": DATASET, "transfer": {"file": transfer_file_id}},
        "model": copy.deepcopy(STUDENT_MODEL),
        "teacher": {"job": teacher_job_id},
        "distillation": copy.deepcopy(DISTILLATION),
        "training": copy.deepcopy(STUDENT_TRAINING),
    }


DEFAULT_OUTPUT = Path("demo-output")
DEFAULT_HOME = DEFAULT_OUTPUT / "home"
POLL_INTERVAL = 1.0
SERVER_START_TIMEOUT = 180.0
SERVER_STOP_TIMEOUT = 20.0
KEY_TIMEOUT = 120.0
HOME_MARKER = ".distill-demo"
# The demo always runs the embedded defaults, whatever the calling shell points at.
_EMBEDDED_OVERRIDES = ("DISTILL_DATABASE_URL", "DISTILL_BROKER_URL", "DISTILL_STORAGE_URL")


class DemoError(Exception):
    pass


# -- the standalone server ----------------------------------------------------------------------------------


def distill_command() -> list[str]:
    """How to run ``distill`` with this interpreter (no dependence on PATH)."""
    return [sys.executable, "-m", "distill.cli"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def fresh_home(home: Path) -> Path:
    """Empty ``home`` for this run; refuse to delete a folder that an earlier demo did not make."""
    home = home.expanduser().resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / HOME_MARKER).exists():
            raise DemoError(f"{home} exists and was not made by `distill demo`: pick another --home")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / HOME_MARKER).write_text("made by `distill demo`; deleted by the next run\n")
    return home


def demo_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in _EMBEDDED_OVERRIDES:
        env.pop(name, None)
    env["DISTILL_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    # Make ``-m distill.cli`` importable from any working directory, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


class StandaloneServer:
    """``distill standalone`` as a child process in its own process group; stopped on exit of the block."""

    def __init__(self, home: Path, env: dict[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.home = home
        self.env = env
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.log_path = home / "standalone.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> StandaloneServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        command = [*distill_command(), "standalone", "--host", self.host, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=os.name == "posix",
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) if os.name == "nt" else 0,
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        """Poll ``GET /healthz`` until it answers ok; fail fast if the process dies."""
        deadline = time.monotonic() + timeout
        with Client(self.url, api_key="", timeout=2.0) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise DemoError(
                        f"distill standalone exited with code {self.proc.returncode}; log:\n{self.log_tail()}"
                    )
                try:
                    if client.health().get("status") == "ok":
                        return
                except DistillError:
                    pass
                if time.monotonic() > deadline:
                    raise DemoError(
                        f"{self.url}/healthz not ready after {timeout:.0f} s; log:\n{self.log_tail()}"
                    )
                time.sleep(0.25)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            if os.name == "posix":
                os.killpg(self.proc.pid, sig)
            elif sig == signal.SIGTERM:
                self.proc.terminate()
            else:
                self.proc.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def _group_alive(self) -> bool:
        """Whether a live (not zombie) process remains in the server's process group."""
        if os.name != "posix" or self.proc is None:
            return False
        pgid = self.proc.pid
        proc_root = Path("/proc")
        if proc_root.is_dir():  # Linux: zombies that nobody reaps (PID 1 in a container) do not count
            for stat in proc_root.glob("[0-9]*/stat"):
                try:
                    text = stat.read_text()
                except OSError:
                    continue
                fields = text[text.rfind(")") + 2 :].split()
                if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
                    return True
            return False
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _running(self) -> bool:
        """The main process (``poll`` reaps it) or anything else in its process group is alive."""
        return self.proc is not None and (self.proc.poll() is None or self._group_alive())

    def stop(self, timeout: float = SERVER_STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after ``timeout``."""
        if self.proc is not None and self._running():
            self._signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._running():
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=5.0)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def create_api_key(env: dict[str, str]) -> str:
    """``distill keys create --tenant demo``, which prints only the key."""
    command = [*distill_command(), "keys", "create", "--tenant", "demo"]
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=KEY_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise DemoError(f"`distill keys create` did not finish within {KEY_TIMEOUT:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise DemoError(f"`distill keys create` failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return lines[-1].strip()


# -- data ---------------------------------------------------------------------------------------------------


def make_transfer_set(path: Path, size: int = TRANSFER_SIZE, seed: int = TRANSFER_SEED) -> Path:
    """An ``.npz`` with only ``x``: ``size`` MNIST-1D inputs, no labels, generated offline."""
    import numpy as np
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = size
    args.seed = seed
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(handle, x=x)
    return path


# -- jobs ---------------------------------------------------------------------------------------------------


def wait_all(
    client: Client, bars: JobBars, jobs: list[tuple[TaskID, JobRead]], poll_interval: float = POLL_INTERVAL
) -> list[JobRead]:
    """``Client.wait`` for each job in its own daemon thread, moving its bar; Ctrl-C stays responsive."""
    finals: dict[int, JobRead] = {}
    errors: dict[int, BaseException] = {}

    def follow(index: int, task: TaskID, job: JobRead) -> None:
        try:
            on_update = bars.callback(task, print_events=True, min_level="warning")
            finals[index] = client.wait(job.id, poll_interval, on_update)
        except BaseException as exc:
            errors[index] = exc

    threads = [
        threading.Thread(target=follow, args=(index, task, job), daemon=True, name=f"wait-{job.id}")
        for index, (task, job) in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        for thread in threads:
            thread.join(0.2)
    if errors:
        raise errors[min(errors)]
    return [finals[index] for index in range(len(jobs))]


def require_success(job: JobRead, label: str) -> JSONDict:
    if job.status != "succeeded":
        detail = f"{job.error.code} {job.error.message}" if job.error is not None else ""
        raise DemoError(f"the {label} job {job.id} ended {job.status}: {detail}".rstrip())
    if job.result is None:
        raise DemoError(f"the {label} job {job.id} succeeded without a result")
    return job.result


# -- results ------------------------------------------------------------------------------------------------

METRICS = ("test_accuracy", "parameters", "cpu_latency_ms", "cpu_throughput")


def summarize(teacher: JobRead, scratch: JobRead, distilled: JobRead) -> JSONDict:
    """The comparison for ``results.json`` (accuracies are fractions, so is the gain over scratch)."""
    t_res, s_res, d_res = teacher.result or {}, scratch.result or {}, distilled.result or {}
    teacher_row: JSONDict = {"model": "teacher", "job_id": teacher.id}
    for metric in METRICS:
        value = t_res.get(metric)
        teacher_row[metric] = value if value is not None else d_res.get(f"teacher_{metric}")
    rows = [
        teacher_row,
        {"model": "student from scratch", "job_id": scratch.id, **{m: s_res.get(m) for m in METRICS}},
        {"model": "distilled student", "job_id": distilled.id, **{m: d_res.get(m) for m in METRICS}},
    ]

    def ratio(a: Any, b: Any) -> float | None:
        ok = isinstance(a, int | float) and isinstance(b, int | float) and b
        return float(a) / float(b) if ok else None

    def diff(a: Any, b: Any) -> float | None:
        return float(a) - float(b) if isinstance(a, int | float) and isinstance(b, int | float) else None

    return {
        "rows": rows,
        "distilled_gain_over_scratch": diff(rows[2]["test_accuracy"], rows[1]["test_accuracy"]),
        "distilled_parameter_share_of_teacher": ratio(rows[2]["parameters"], rows[0]["parameters"]),
        "agreement_with_teacher": d_res.get("agreement_with_teacher"),
        "transfer_size": TRANSFER_SIZE,
        "specs": {
            "teacher": teacher.spec,
            "student_from_scratch": scratch.spec,
            "distilled_student": distilled.spec,
        },
    }


def results_table(summary: JSONDict) -> Table:
    table = Table(title="MNIST-1D: teacher vs student", title_justify="left")
    table.add_column("model", style="bold")
    table.add_column("test accuracy", justify="right")
    table.add_column("parameters", justify="right")
    table.add_column("CPU latency\n(ms, batch 1)", justify="right")
    table.add_column("CPU throughput\n(ex/s, batch 64)", justify="right")
    table.add_column("gain over\nscratch", justify="right")
    table.add_column("share of teacher\nparameters", justify="right")
    rows = summary["rows"]
    teacher_params = rows[0].get("parameters")
    for index, row in enumerate(rows):
        gain = "-"
        if index == 2 and summary.get("distilled_gain_over_scratch") is not None:
            points = 100 * summary["distilled_gain_over_scratch"]
            gain = f"[{'green' if points >= 0 else 'red'}]{points:+.2f} pts[/]"
        share = "-"
        if index > 0 and isinstance(row.get("parameters"), int | float) and teacher_params:
            share = f"{100 * row['parameters'] / teacher_params:.1f}%"
        table.add_row(
            row["model"],
            fmt_pct(row.get("test_accuracy")),
            fmt_num(row.get("parameters")),
            fmt_num(row.get("cpu_latency_ms"), 3),
            fmt_num(row.get("cpu_throughput"), 0),
            gain,
            share,
        )
    if summary.get("agreement_with_teacher") is not None:
        table.caption = (
            f"distilled student agrees with the teacher on {fmt_pct(summary['agreement_with_teacher'])}"
        )
        table.caption += " of test inputs"
    return table


# -- the command --------------------------------------------------------------------------------------------


def run_demo(home: Path, output: Path, port: int, poll_interval: float, console: Console) -> JSONDict:
    # Fail on a bad constant before starting anything.
    for spec in (TEACHER_SPEC, STUDENT_SPEC, distilled_spec("job_x", "file_x")):
        JobSpec.model_validate(spec)
    output = output.expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    home = fresh_home(home)
    env = demo_env(home)

    with StandaloneServer(home, env, port=port) as server:
        server.start()
        console.print(f"[bold]distill standalone[/] on {server.url} (DISTILL_HOME={escape(str(home))})")
        with console.status(
            f"generating {TRANSFER_SIZE:,} unlabeled MNIST-1D inputs (seed {TRANSFER_SEED})…"
        ):
            transfer_path = make_transfer_set(home / "transfer-set.npz", TRANSFER_SIZE, TRANSFER_SEED)
        with console.status("waiting for the API and the worker…"):
            server.wait_ready()
        with console.status("creating an API key…"):
            key = create_api_key(env)
        console.print(
            f"API ready; key for tenant [bold]demo[/] created (server log: {escape(str(server.log_path))})"
        )

        with Client(server.url, key, timeout=60.0) as client:
            transfer = client.upload_file(transfer_path, "dataset")
            console.print(f"uploaded the transfer set as {transfer.id} ({transfer.bytes:,} bytes)")

            with JobBars(console) as bars:
                teacher = client.create_job(TEACHER_SPEC)
                teacher_task = bars.add("teacher (CNN)", teacher)
                [teacher] = wait_all(client, bars, [(teacher_task, teacher)], poll_interval)
                require_success(teacher, "teacher")

                scratch = client.create_job(STUDENT_SPEC)
                distilled = client.create_job(distilled_spec(teacher.id, transfer.id))
                scratch_task = bars.add("student from scratch (MLP)", scratch)
                distilled_task = bars.add("distilled student (MLP)", distilled)
                scratch, distilled = wait_all(
                    client, bars, [(scratch_task, scratch), (distilled_task, distilled)], poll_interval
                )
            require_success(scratch, "student from scratch")
            require_success(distilled, "distilled student")

            summary = summarize(teacher, scratch, distilled)
            console.print()
            console.print(results_table(summary))

            names = {item.name for item in client.list_artifacts(distilled.id).data}
            downloaded = [
                client.download_artifact(distilled.id, name, output)
                for name in ("model.safetensors", "report.json", "curves.svg")
                if name in names
            ]
        summary["downloads"] = [str(path) for path in downloaded]
        results_path = output / "results.json"
        results_path.write_text(json.dumps(summary, indent=2) + "\n")
        with console.status("stopping distill standalone…"):
            server.stop()

    for path in downloaded:
        console.print(f"downloaded [bold]{escape(str(path))}[/] (sha256 checked)")
    console.print(f"results: [bold]{escape(str(results_path))}[/]")
    return summary


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(
    home: Annotated[
        Path, typer.Option("--home", help="DISTILL_HOME for the demo server; emptied first (demo-made only).")
    ] = DEFAULT_HOME,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where results.json and the distilled model go.")
    ] = DEFAULT_OUTPUT,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="API port; 0 picks a free one.")] = 0,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.05)] = POLL_INTERVAL,
) -> None:
    """Run the service locally and distil a CNN teacher into a small MLP on MNIST-1D, end to end."""
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns and fold the table
        console = Console(width=120)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (and a closed terminal) stop the demo server like Ctrl-C does.
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None:
                signal.signal(signum, _interrupt)
    try:
        run_demo(home, output, port, poll_interval, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: the demo server was stopped[/]")
        raise typer.Exit(130) from None
    except (DemoError, DistillError) as exc:
        console.print(f"[red]demo failed:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
