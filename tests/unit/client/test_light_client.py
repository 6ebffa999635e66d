"""The light client stays light: importing it (and running the CLI's user side) loads no server stack."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "celery", "sqlalchemy", "fastapi", "uvicorn", "boto3", "transformers", "numpy")

PROBE = """
import json, sys
{imports}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_modules_after(imports: str) -> list[str]:
    code = PROBE.format(imports=imports, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def test_from_distill_import_client_loads_nothing_heavy() -> None:
    imports = (
        "from distill import Client, DistillError\nfrom distill.schemas import JobRead\nimport distill.spec"
    )
    assert heavy_modules_after(imports) == []


def test_the_cli_loads_nothing_heavy() -> None:
    imports = "import distill.cli\nfrom distill.cli import app"
    assert heavy_modules_after(imports) == []


def test_help_runs_on_the_light_side() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "distill.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "jobs" in done.stdout and "standalone" in done.stdout


def test_load_model_is_reached_lazily() -> None:
    loaded = heavy_modules_after("import distill\nassert callable(distill.load_model)")
    assert "torch" in loaded  # only now, and without the server stack
    assert not {"celery", "sqlalchemy", "fastapi", "uvicorn", "boto3", "transformers"} & set(loaded)
