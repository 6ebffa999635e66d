"""The demo's local pieces: its specs, transfer set, summary, home folder and server lifecycle."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from distill.cli import demo
from distill.schemas import JobRead
from distill.spec import JobSpec


def test_demo_specs_are_valid_job_specs() -> None:
    for spec in (demo.TEACHER_SPEC, demo.STUDENT_SPEC, demo.distilled_spec("job_t", "file_x")):
        JobSpec.model_validate(spec)
    distilled = JobSpec.model_validate(demo.distilled_spec("job_t", "file_x"))
    scratch = JobSpec.model_validate(demo.STUDENT_SPEC)
    assert distilled.model == scratch.model and distilled.training == scratch.training


def test_transfer_set_has_only_unlabeled_x(tmp_path: Path) -> None:
    import numpy as np

    path = demo.make_transfer_set(tmp_path / "t.npz", size=200, seed=demo.TRANSFER_SEED)
    with np.load(path) as data:
        assert data.files == ["x"]
        assert data["x"].shape == (200, 40) and data["x"].dtype == np.float32


def test_summary_gain_and_share() -> None:
    def done(job_id: str, **result: Any) -> JobRead:
        return JobRead(
            id=job_id,
            status="succeeded",
            name=None,
            spec={},
            created_at=datetime.now(UTC),
            started_at=None,
            finished_at=None,
            progress={},
            result=result,
            error=None,
            cancel_requested=False,
        )

    summary = demo.summarize(
        done("job_t", test_accuracy=0.95, parameters=40_000, cpu_latency_ms=0.5, cpu_throughput=1e4),
        done("job_s", test_accuracy=0.60, parameters=2_000, cpu_latency_ms=0.05, cpu_throughput=1e5),
        done("job_d", test_accuracy=0.70, parameters=2_000, agreement_with_teacher=0.72),
    )
    assert summary["distilled_gain_over_scratch"] == pytest.approx(0.10)
    assert summary["distilled_parameter_share_of_teacher"] == pytest.approx(0.05)
    assert [row["model"] for row in summary["rows"]] == [
        "teacher",
        "student from scratch",
        "distilled student",
    ]
    demo.results_table(summary)  # renders without errors


def test_fresh_home_refuses_foreign_folders(tmp_path: Path) -> None:
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    with pytest.raises(demo.DemoError):
        demo.fresh_home(foreign)
    assert (foreign / "data.txt").exists()
    home = demo.fresh_home(tmp_path / "home")
    (home / "old.db").write_text("x")
    assert demo.fresh_home(home) == home and not (home / "old.db").exists()


FAKE_STANDALONE = textwrap.dedent(
    """
    import http.server, json, os, signal, subprocess, sys
    if sys.argv[1:3] == ["keys", "create"]:
        print("dk_from_fake")
        sys.exit(0)
    port = int(sys.argv[sys.argv.index("--port") + 1])
    ignore = os.environ.get("FAKE_IGNORE_TERM") == "1"
    child_code = "import signal, time\\n"
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child_code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    child = subprocess.Popen([sys.executable, "-c", child_code + "time.sleep(600)"])
    open(os.path.join(os.environ["DISTILL_HOME"], "child.pid"), "w").write(str(child.pid))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir() or os.name != "posix", reason="needs Linux /proc")
@pytest.mark.parametrize("ignore_term", [False, True])
def test_standalone_server_lifecycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ignore_term: bool
) -> None:
    script = tmp_path / "fake_distill.py"
    script.write_text(FAKE_STANDALONE)
    monkeypatch.setattr(demo, "distill_command", lambda: [sys.executable, str(script)])
    home = demo.fresh_home(tmp_path / "home")
    env = demo.demo_env(home)
    env["FAKE_IGNORE_TERM"] = "1" if ignore_term else "0"
    assert demo.create_api_key(env) == "dk_from_fake"
    with demo.StandaloneServer(home, env) as server:
        server.start()
        server.wait_ready(timeout=30)
        assert server.proc is not None
        main_pid = server.proc.pid
        deadline = time.monotonic() + 10
        while not (home / "child.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child_pid = int((home / "child.pid").read_text())
        assert _alive(main_pid) and _alive(child_pid)
        started = time.monotonic()
        server.stop(timeout=1.0)
        assert time.monotonic() - started < 8
    assert not _alive(main_pid)
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid)
