#!/usr/bin/env bash
# Create .venv (if missing) and install the project with its server and dev extras into it. Idempotent and quick when
# nothing changed: the sha256 of pyproject.toml is stored in .venv/.distill-installed after a successful install.
#
#   PYTHON=python3.11 scripts/bootstrap.sh      # choose the interpreter for a new venv (default: python3)
#   DISTILL_FORCE_INSTALL=1 scripts/bootstrap.sh   # reinstall even when pyproject.toml is unchanged
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

TORCH_VERSION="${DISTILL_TORCH_VERSION:-2.13.0}"
STAMP="$VENV/.distill-installed"

# pip install, quiet; errors and warnings still show, except this machine-specific noise about configured
# local package indexes that do not hold a given project.
pip_install() {
    "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 \
        | { grep -v 'is ignored: it is neither a file nor a directory' || true; } >&2
}

bootstrap() {
    cd "$ROOT"
    local py="$VENV/bin/python"

    if [[ -x "$py" ]] && ! "$py" -c 'import sys' >/dev/null 2>&1; then
        log "$VENV is broken (its python does not run): recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -x "$py" ]]; then
        local base="${PYTHON:-python3}"
        command -v "$base" >/dev/null 2>&1 || die "$base not found (set PYTHON=/path/to/python3.11)"
        "$base" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "$base is $("$base" -V 2>&1); Python >= 3.11 is required (set PYTHON=...)"
        log "creating $VENV with $("$base" -V 2>&1)"
        "$base" -m venv "$VENV"
    fi

    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [[ -z "${DISTILL_FORCE_INSTALL:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" \
          && -x "$VENV/bin/distill" ]]; then
        return 0
    fi

    # torch first, pinned: resolving it through the project's range could pull a newer build (and GBs of CUDA).
    if ! "$py" -c 'import torch' >/dev/null 2>&1; then
        log "installing torch==$TORCH_VERSION"
        pip_install "torch==$TORCH_VERSION"
    fi

    log "installing the project: pip install -e '.[server,dev]'"
    rm -f "$STAMP"
    pip_install -e '.[server,dev]'
    printf '%s\n' "$want" >"$STAMP"
    log "installed ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
}

with_lock bootstrap bootstrap
