#!/usr/bin/env bash
# Run the end-to-end demo (embedded mode: no services needed). Extra arguments go to `distill demo`.
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$VENV/bin/distill" demo "$@"
