"""The user commands and the demo's local pieces, against mock transports and fake processes (no server)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from client import demo, user_cli
from client.sdk import Client
from distill.spec import JobSpec

KEY = "dk_cli"
MODEL = b"weights" * 100
REPORT = json.dumps(
    {
        "teacher": {"test_accuracy": 0.95},
        "history": [{"epoch": 1.0, "val_accuracy": 0.5}, {"epoch": 2.0, "val_accuracy": 0.9}],
        "baseline_history": [{"epoch": 1.0, "val_accuracy": 0.4}, {"epoch": 2.0, "val_accuracy": 0.7}],
    }
).encode()


def job(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "object": "job",
        "status": status,
        "name": f"name-{job_id}",
        "progress": {"epoch": 2, "epochs": 2, "step": 10, "steps": 10},
        "result": None,
        "error": None,
        **extra,
    }


def fake_api(request: httpx.Request) -> httpx.Response:
    if request.headers.get("authorization") != f"Bearer {KEY}":
        return httpx.Response(
            401, json={"error": {"code": "unauthorized", "message": "bad key", "field": None}}
        )
    path = request.url.path
    if path == "/v1/jobs" and request.method == "GET":
        return httpx.Response(
            200, json={"object": "list", "data": [job("job_b", "running")], "has_more": False}
        )
    if path == "/v1/jobs" and request.method == "POST":
        spec = json.loads(request.content)
        return httpx.Response(201, json=job("job_new", "queued", spec=spec))
    if path == "/v1/jobs/job_ok":
        result = {"test_accuracy": 0.9, "parameters": 1234, "cpu_latency_ms": 0.1, "cpu_throughput": 1e5}
        return httpx.Response(200, json=job("job_ok", "succeeded", result=result))
    if path == "/v1/jobs/job_bad":
        error = {"code": "training_failed", "message": "loss is NaN"}
        return httpx.Response(200, json=job("job_bad", "failed", error=error))
    if path.endswith("/events"):
        event = {
            "seq": 1,
            "created_at": "t",
            "level": "info",
            "message": "epoch 1",
            "data": {"val_accuracy": 0.5},
        }
        return httpx.Response(200, json={"object": "list", "data": [event], "has_more": False})
    if path == "/v1/jobs/job_ok/artifacts":
        items = [
            {"name": name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
            for name, blob in (
                ("model.safetensors", MODEL),
                ("report.json", REPORT),
                ("curves.svg", b"<svg/>"),
            )
        ]
        return httpx.Response(200, json={"object": "list", "data": items, "has_more": False})
    if path == "/v1/jobs/job_ok/artifacts/model.safetensors":
        return httpx.Response(200, content=MODEL)
    if path == "/v1/jobs/job_ok/artifacts/report.json":
        return httpx.Response(200, content=REPORT)
    if path == "/v1/jobs/job_ok/artifacts/curves.svg":
        return httpx.Response(200, content=b"<svg/>")
    return httpx.Response(404, json={"error": {"code": "not_found", "message": path, "field": None}})


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(
        user_cli, "make_client", lambda url, key: Client(url, key, transport=httpx.MockTransport(fake_api))
    )
    monkeypatch.setenv("DISTILL_API_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "200")
    app = typer.Typer()
    user_cli.register(app)
    return app


runner = CliRunner()


def test_jobs_list_table_and_json(cli: typer.Typer) -> None:
    result = runner.invoke(cli, ["jobs", "list"])
    assert result.exit_code == 0, result.output
    assert "job_b" in result.stdout and "running" in result.stdout
    result = runner.invoke(cli, ["jobs", "list", "--json"])
    assert json.loads(result.stdout)["data"][0]["id"] == "job_b"


def test_jobs_create_from_stdin(cli: typer.Typer) -> None:
    spec = {"data": {"train": {"builtin": "mnist1d"}}}
    result = runner.invoke(
        cli, ["jobs", "create", "-", "--name", "from-stdin", "--json"], input=json.dumps(spec)
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spec"] == {**spec, "name": "from-stdin"}


def test_jobs_wait_exit_codes(cli: typer.Typer) -> None:
    ok = runner.invoke(cli, ["jobs", "wait", "job_ok", "--poll-interval", "0.05"])
    assert ok.exit_code == 0, ok.output
    assert "90.00%" in ok.stdout
    bad = runner.invoke(cli, ["jobs", "wait", "job_bad", "--poll-interval", "0.05", "--json"])
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["error"]["code"] == "training_failed"


def test_a_finished_job_shows_its_validation_curve(cli: typer.Typer) -> None:
    for command in (["jobs", "wait", "job_ok", "--poll-interval", "0.05"], ["jobs", "get", "job_ok"]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 0, result.output
        assert "val_accuracy per epoch (2 epochs, scale 0.400 to 0.900)" in result.stdout
        assert "distilled student        ▂█  0.500 → 0.900" in result.stdout
        assert "baseline (from scratch)  ▁▅  0.400 → 0.700" in result.stdout
        assert "teacher                  0.950" in result.stdout
        assert "distill artifacts download job_ok curves.svg" in result.stdout
    assert "per epoch" not in runner.invoke(cli, ["jobs", "get", "job_ok", "--json"]).stdout


def test_sparklines_share_a_scale_and_leave_gaps():
    from client.ui import curve_lines, sparkline

    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "
    assert sparkline([0.3, 0.3]) == "▅▅"
    assert sparkline([]) == ""
    assert curve_lines({"history": [{"epoch": 1.0}]}) == []
    assert curve_lines({"history": [{"val_cosine": 0.8}]})[1] == "  model  ▅  0.800 → 0.800"
    long = curve_lines({"history": [{"val_accuracy": i / 99} for i in range(100)]}, width=10)
    assert "▁" in long[1] and long[1].count("█") == 1 and "(100 epochs" in long[0]


def test_errors_go_to_stderr_with_exit_1(cli: typer.Typer) -> None:
    result = runner.invoke(cli, ["jobs", "get", "job_nope"])
    assert result.exit_code == 1
    assert "not_found" in result.stderr
    result = runner.invoke(cli, ["jobs", "list", "--api-key", "wrong"])
    assert result.exit_code == 1
    assert "unauthorized" in result.stderr


def test_artifacts_download_all(cli: typer.Typer, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["artifacts", "download", "job_ok", "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == MODEL


# -- demo ----------------------------------------------------------------------------------------------------


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
    def done(job_id: str, **result: Any) -> dict[str, Any]:
        return {"id": job_id, "status": "succeeded", "spec": {}, "result": result}

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
