#!/usr/bin/env bash
# On a lent GPU machine: /metrics reports the GPU's memory, and counts memory that another process (a
# worker's job) holds. Offline, with the wheels of scripts/device_wheels.sh:
#
#   run(command="bash scripts/device_check_metrics.sh", carry=[".device-wheels"], timeout_s=240)
#
# Prints the scrapes, whether scraping created a CUDA context in the API process, and PASSED/FAILED.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS="${DEVICE_WHEELS:-$ROOT/.device-wheels}"
BASE="${DEVICE_CHECK_PYTHON:-/opt/torch/.venv/bin/python3}"
[[ -x "$BASE" ]] || BASE="$(command -v python3)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/distill-metrics-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
PY="$WORK/venv/bin/python"

while read -r var; do unset "$var"; done < <(compgen -e | grep '^PIP_' || true)
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONPATH="$ROOT"
"$BASE" -m venv --system-site-packages --without-pip "$WORK/venv"
"$BASE" -c 'import site; print(f"import site; list(map(site.addsitedir, {site.getsitepackages()!r}))")' \
    >"$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/distill_image_site.pth"
shopt -s nullglob
pip_wheels=("$WHEELS"/pip-*.whl)
[[ ${#pip_wheels[@]} == 1 ]] || { echo "no pip wheel in $WHEELS: run scripts/device_wheels.sh first" >&2; exit 1; }
"$PY" "${pip_wheels[0]}/pip" install --quiet --no-deps "$WHEELS"/*.whl
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true

export DISTILL_HOME="$WORK/home"
"$PY" - <<'EOF'
import os
import subprocess
import sys

import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from distill.db import migrate
from distill.settings import Settings


def gpu(client: TestClient) -> dict:
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("distill_gpu_memory"):
                found[(sample.name, sample.labels["device"])] = sample.value
    return found


settings = Settings(webhooks_dispatch=False)
migrate(settings.database_url)
with TestClient(create_app(settings)) as client:
    before = gpu(client)
    print("scrape:", before)
    print("CUDA initialised in the API process by scraping:", torch.cuda.is_initialized())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import torch, time; x = torch.empty(4 * 2**30, dtype=torch.uint8, device='cuda');"
         " print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    after = gpu(client)
    holder.kill()
    print("scrape while another process holds 4 GiB:", after)
    total = before[("distill_gpu_memory_total_bytes", "0")]
    grew = after[("distill_gpu_memory_used_bytes", "0")] - before[("distill_gpu_memory_used_bytes", "0")]
    print(f"total {total / 2**30:.1f} GiB; used grew by {grew / 2**30:.2f} GiB")
    ok = total > 0 and grew >= 4 * 2**30
    print("GPU METRICS CHECK", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)
EOF
