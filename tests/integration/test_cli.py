"""The ``distill`` command against the real API and a real worker (typer's CliRunner in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import digits_arrays, npz_bytes
from typer.testing import CliRunner

from distill import Client
from distill.cli import app

pytestmark = pytest.mark.integration

SPEC_YAML = """\
name: cli-digits
data:
  train: {builtin: digits}
model: {arch: mlp, hidden: [16]}
training: {epochs: 2, learning_rate: 0.01}
"""

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_env(stack) -> dict[str, str]:
    client = stack.client("cli-tenant")
    return {"DISTILL_API_URL": stack.url, "DISTILL_API_KEY": client.api_key or "", "COLUMNS": "250"}


def distill(env: dict[str, str], *args: str) -> object:
    return runner.invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def finished_job(cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    spec = tmp_path_factory.mktemp("specs") / "job.yaml"
    spec.write_text(SPEC_YAML)
    result = runner.invoke(
        app, ["-q", "jobs", "create", str(spec), "--wait", "--poll-interval", "0.2"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    assert job_id.startswith("job_") and "\n" not in job_id
    return job_id


def test_create_from_yaml_wait_and_show(cli_env: dict[str, str], finished_job: str, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC_YAML)
    result = runner.invoke(
        app, ["jobs", "create", str(spec), "--wait", "--poll-interval", "0.2"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    assert "created job_" in result.stdout
    assert "val_accuracy per epoch (2 epochs" in result.stdout
    assert "distill artifacts download job_" in result.stdout
    shown = runner.invoke(app, ["--json", "jobs", "get", finished_job], env=cli_env)
    job = json.loads(shown.stdout)
    assert job["id"] == finished_job and job["status"] == "succeeded"
    assert job["spec"]["training"]["epochs"] == 2


def test_lists_show_full_ids_and_q_prints_only_ids(cli_env: dict[str, str], finished_job: str) -> None:
    table = runner.invoke(app, ["jobs", "list"], env=cli_env)
    assert table.exit_code == 0, table.output
    assert finished_job in table.stdout  # the whole id, not job_01m8mp…
    ids = runner.invoke(app, ["-q", "jobs", "list", "--status", "succeeded"], env=cli_env)
    assert finished_job in ids.stdout.split()
    assert all(line.startswith("job_") for line in ids.stdout.split())


def test_a_page_points_at_the_next_and_all_follows_every_page(
    cli_env: dict[str, str], finished_job: str, tmp_path: Path
) -> None:
    data = tmp_path / "digits.npz"
    data.write_bytes(npz_bytes(*digits_arrays()))
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC_YAML)
    job = runner.invoke(app, ["-q", "jobs", "create", str(spec)], env=cli_env).stdout.strip()
    assert runner.invoke(app, ["jobs", "cancel", job], env=cli_env).exit_code == 0
    for _ in range(2):  # two of each at least (with finished_job), so a page of one has more after it
        assert runner.invoke(app, ["-q", "files", "upload", str(data)], env=cli_env).exit_code == 0
    for what in ("jobs", "files"):
        first = runner.invoke(app, [what, "list", "--limit", "1"], env=cli_env)
        assert first.exit_code == 0, first.output
        assert f"more: distill {what} list --after " in first.stdout
        page = json.loads(runner.invoke(app, ["--json", what, "list", "--limit", "1"], env=cli_env).stdout)
        assert page["has_more"] is True and len(page["data"]) == 1
        every_run = runner.invoke(app, ["--json", what, "list", "--limit", "1", "--all"], env=cli_env)
        every = json.loads(every_run.stdout)
        assert every["has_more"] is False and len(every["data"]) >= 2
        assert every["data"][0]["id"] == page["data"][0]["id"]
        ids = runner.invoke(app, ["-q", what, "list", "--all"], env=cli_env).stdout.split()
        assert ids == [item["id"] for item in every["data"]]


def test_logs_show_each_epoch_with_losses(cli_env: dict[str, str], finished_job: str) -> None:
    result = runner.invoke(app, ["--json", "jobs", "logs", finished_job], env=cli_env)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    epochs = [e for e in events if e["message"].startswith("epoch ")]
    assert len(epochs) == 2 and "train_loss" in epochs[0]["data"] and "val_accuracy" in epochs[0]["data"]
    followed = runner.invoke(app, ["jobs", "logs", finished_job, "-f", "--poll-interval", "0.1"], env=cli_env)
    assert followed.exit_code == 0 and "epoch 2/2" in followed.stdout and "succeeded" in followed.stdout


def test_cancel_says_what_happened(stack, cli_env: dict[str, str]) -> None:
    client: Client = stack.client("cli-tenant")
    job = client.create_job({"data": {"train": {"builtin": "mnist1d"}}, "training": {"epochs": 200}})
    result = runner.invoke(app, ["jobs", "cancel", job.id], env=cli_env)
    assert result.exit_code == 0, result.output
    assert f"{job.id} cancelled" in result.stdout or "cancellation requested" in result.stdout
    final = client.wait(job.id, poll_interval=0.2, timeout=120)
    assert final.status == "cancelled"
    waited = runner.invoke(app, ["jobs", "wait", job.id, "--poll-interval", "0.1"], env=cli_env)
    assert waited.exit_code == 1 and "cancelled" in waited.stderr  # a followed job that did not succeed
    again = runner.invoke(app, ["jobs", "cancel", job.id], env=cli_env)
    assert again.exit_code == 1 and "409" in again.stderr


def test_download_goes_into_a_folder_named_after_the_job_and_never_overwrites(
    cli_env: dict[str, str], finished_job: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = runner.invoke(app, ["artifacts", "download", finished_job], env=cli_env)
    assert first.exit_code == 0, first.output
    model = tmp_path / finished_job / "model.safetensors"
    assert model.exists() and (tmp_path / finished_job / "report.json").exists()
    model.write_bytes(b"my edits")
    again = runner.invoke(app, ["artifacts", "download", finished_job, "model.safetensors"], env=cli_env)
    assert again.exit_code == 1
    assert "--force" in again.stderr
    assert model.read_bytes() == b"my edits"
    forced = runner.invoke(
        app, ["artifacts", "download", finished_job, "model.safetensors", "--force"], env=cli_env
    )
    assert forced.exit_code == 0, forced.output
    assert model.read_bytes() != b"my edits"
    out = runner.invoke(app, ["-q", "artifacts", "download", finished_job, "--out", "elsewhere"], env=cli_env)
    assert out.exit_code == 0
    assert (tmp_path / "elsewhere" / "model.safetensors").exists()
    missing = runner.invoke(
        app, ["artifacts", "download", finished_job, "nope.bin", "--out", "x"], env=cli_env
    )
    assert missing.exit_code == 1 and "model.safetensors" in missing.stderr


def test_downloaded_student_loads_outside_distill(
    cli_env: dict[str, str], finished_job: str, tmp_path: Path
) -> None:
    import torch

    import distill

    result = runner.invoke(app, ["artifacts", "download", finished_job, "--out", str(tmp_path)], env=cli_env)
    assert result.exit_code == 0, result.output
    model = distill.load_model(tmp_path / "model.safetensors")
    x, y = digits_arrays()
    predictions = model.predict(torch.from_numpy(x))
    accuracy = sum(p == str(int(t)) for p, t in zip(predictions, y, strict=True)) / len(y)
    assert model.input_shape == (8, 8) and model.class_names == [str(i) for i in range(10)]
    assert accuracy > 0.5


def test_files_upload_list_get_delete(cli_env: dict[str, str], tmp_path: Path) -> None:
    x, y = digits_arrays()
    path = tmp_path / "digits.npz"
    path.write_bytes(npz_bytes(x[:100], y[:100]))
    uploaded = runner.invoke(app, ["-q", "files", "upload", str(path)], env=cli_env)
    assert uploaded.exit_code == 0, uploaded.output
    file_id = uploaded.stdout.strip()
    assert file_id in runner.invoke(app, ["-q", "files", "list"], env=cli_env).stdout.split()
    shown = json.loads(runner.invoke(app, ["--json", "files", "get", file_id], env=cli_env).stdout)
    assert shown["filename"] == "digits.npz" and shown["purpose"] == "dataset"
    deleted = runner.invoke(app, ["files", "delete", file_id], env=cli_env)
    assert deleted.exit_code == 0 and f"deleted {file_id}" in deleted.stdout
    gone = runner.invoke(app, ["files", "get", file_id], env=cli_env)
    assert gone.exit_code == 1 and "404" in gone.stderr


def test_a_bad_spec_names_the_field(cli_env: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("data: {train: {builtin: digits}}\ntraining: {epochs: 0}\n")
    result = runner.invoke(app, ["jobs", "create", str(spec)], env=cli_env)
    assert result.exit_code == 1
    assert "training.epochs" in result.stderr
