"""The ``distill`` command's local behaviour: root options, spec files, the config file, rendering.

Commands against a real API and worker are in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill import __version__
from distill.cli import app
from distill.cli.config import ConfigError, read_config, resolve
from distill.cli.ui import curve_lines, epoch_losses, fmt_losses, sparkline
from distill.cli.user import read_spec
from distill.client.sdk import DEFAULT_API_URL
from distill.schemas import EventRead

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DISTILL_API_URL", "DISTILL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISTILL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("COLUMNS", "200")


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"distill {__version__}"


def test_help_names_the_formats_the_server_accepts() -> None:
    for command in (["files", "--help"], ["files", "upload", "--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "CSV" in text and "Parquet" in text and "JSONL" in text and "NPZ" in text
    create = " ".join(runner.invoke(app, ["jobs", "create", "--help"]).stdout.split())
    assert "YAML or JSON" in create
    root = runner.invoke(app, ["--help"]).stdout
    assert "--json" in root and "--quiet" in root and "--api-url" in root
    flags = [
        line for line in root.splitlines() if "--json" in line or "--quiet" in line or "--version" in line
    ]
    assert flags and not any("<bool>" in line for line in flags)  # flags, not options taking a value


def test_without_a_key_the_command_says_where_to_put_one() -> None:
    result = runner.invoke(app, ["jobs", "list"])
    assert result.exit_code == 1
    assert "no API key" in result.stderr and "DISTILL_API_KEY" in result.stderr
    assert "Traceback" not in result.output


def test_specs_in_yaml_or_json(tmp_path: Path) -> None:
    yaml_spec = tmp_path / "job.yaml"
    yaml_spec.write_text("name: t\ndata:\n  train: {builtin: digits}\ntraining:\n  epochs: 2\n")
    json_spec = tmp_path / "job.json"
    json_spec.write_text(
        json.dumps({"name": "t", "data": {"train": {"builtin": "digits"}}, "training": {"epochs": 2}})
    )
    assert read_spec(str(yaml_spec)) == read_spec(str(json_spec))
    assert read_spec(str(yaml_spec))["training"] == {"epochs": 2}


@pytest.mark.parametrize("text", ["- just\n- a list\n", "key: [unclosed\n", ""])
def test_a_spec_that_is_not_a_mapping_is_refused_in_one_line(tmp_path: Path, text: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    result = runner.invoke(app, ["--api-key", "k", "jobs", "create", str(spec)])
    assert result.exit_code == 1
    assert "bad.yaml" in result.stderr and "Traceback" not in result.output


def test_flags_then_environment_then_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve(None, None).api_url == DEFAULT_API_URL
    (tmp_path / "config.toml").write_text('api_url = "http://config.test"\napi_key = "dsk_config"\n')
    assert resolve(None, None) == resolve("http://config.test", "dsk_config")
    assert resolve("http://flag.test", None).api_url == "http://flag.test"
    assert resolve("http://flag.test", None).api_key == "dsk_config"
    (tmp_path / "config.toml").write_text('api_url = "http://config.test"\ntoken = "x"\n')
    with pytest.raises(ConfigError, match="token"):
        read_config()


def test_a_broken_config_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("api_url = \n")
    result = runner.invoke(app, ["jobs", "list"])
    assert result.exit_code == 1
    assert "config.toml" in result.stderr


def test_progress_shows_the_newest_epoch_losses() -> None:
    now = datetime.now(UTC)
    events = [
        EventRead(seq=1, created_at=now, level="info", message="started", data={}),
        EventRead(
            seq=2,
            created_at=now,
            level="info",
            message="epoch 1/2",
            data={
                "epoch": 1,
                "train_loss": 0.5,
                "kd_loss": 0.25,
                "ce_loss": 0.75,
                "val_loss": 0.6,
                "val_accuracy": 0.8,
            },
        ),
        EventRead(seq=3, created_at=now, level="info", message="checkpoint", data={"epoch": 1}),
    ]
    losses = epoch_losses(events)
    assert losses == {"train_loss": 0.5, "kd_loss": 0.25, "ce_loss": 0.75, "val_loss": 0.6}
    assert fmt_losses(losses) == "loss 0.5 ce 0.75 kd 0.25 val loss 0.6"


def test_sparklines_share_a_scale_and_leave_gaps() -> None:
    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▅█ "
    assert sparkline([0.3, 0.3]) == "▅▅"
    assert sparkline([]) == ""
    assert curve_lines({"history": [{"epoch": 1.0}]}) == []
    assert curve_lines({"history": [{"val_cosine": 0.8}]})[1] == "  model  ▅  0.800 → 0.800"
    long = curve_lines({"history": [{"val_accuracy": i / 99} for i in range(100)]}, width=10)
    assert "▁" in long[1] and long[1].count("█") == 1 and "(100 epochs" in long[0]


def test_a_causal_lm_job_shows_its_own_figures_and_curve() -> None:
    from rich.console import Console

    from distill.cli.user import result_table
    from distill.schemas import JobRead

    now = datetime.now(UTC)
    job = JobRead.model_validate(
        {
            "id": "job_1",
            "object": "job",
            "name": "sums",
            "status": "succeeded",
            "spec": {},
            "progress": {},
            "created_at": now,
            "started_at": now,
            "finished_at": now,
            "error": None,
            "cancel_requested": False,
            "result": {
                "exact_match": 0.875,
                "token_accuracy": 0.95,
                "perplexity": 1.25,
                "parameters": 45720,
                "tokens_per_second": 1234.5,
                "teacher_exact_match": 0.99,
                "teacher_parameters": 209984,
            },
        }
    )
    console = Console(width=200, record=True)
    console.print(result_table(job))
    text = console.export_text()
    assert "exact match" in text and "token accuracy" in text and "test accuracy" not in text
    assert "87.50%" in text and "99.00%" in text and "209,984" in text
    lines = curve_lines({"history": [{"val_token_accuracy": 0.5}, {"val_token_accuracy": 0.9}]})
    assert lines[0].startswith("val_token_accuracy per epoch") and lines[1].endswith("0.500 → 0.900")
