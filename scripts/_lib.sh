# Shared helpers for scripts/*.sh (sourced, not executed).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

log() { printf '[distill] %s\n' "$*" >&2; }
die() { printf '[distill] ERROR: %s\n' "$*" >&2; exit 1; }

# with_lock NAME CMD...: run CMD holding an exclusive lock (several checkouts or runs may share this machine).
with_lock() {
    local name="$1"; shift
    if command -v flock >/dev/null 2>&1; then
        local key
        key="$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
        local lockfile="${TMPDIR:-/tmp}/distill-${name}-${key}.lock"
        (
            flock -w 900 9 || die "timed out waiting for lock $lockfile"
            "$@"
        ) 9>"$lockfile"
    else
        "$@"
    fi
}
