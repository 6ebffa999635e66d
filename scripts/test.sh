#!/usr/bin/env bash
# THE test command: bootstrap, services, ruff format --check, ruff check, mypy, pytest "$@".
# Every check stage runs even if an earlier one failed (one run shows all problems); the exit status is
# non-zero when any stage failed. DISTILL_FAIL_FAST=1 stops at the first failure instead.
#
#   scripts/test.sh                                   # everything
#   scripts/test.sh tests/unit -k settings            # lint everything, then pytest with these arguments
set -uo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
cd "$ROOT"

export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
export PYTHONDONTWRITEBYTECODE=1

declare -a SUMMARY=()
FAILED=0

if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi

stage() {
    local name="$1"; shift
    printf '\n%s==== %s: %s%s\n' "$BOLD" "$name" "$*" "$PLAIN"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    local took=$((SECONDS - start))
    if [[ $rc == 0 ]]; then
        SUMMARY+=("$(printf '  %-9s ok      %4ss' "$name" "$took")")
    else
        SUMMARY+=("$(printf '  %-9s FAILED  %4ss  (exit %s)' "$name" "$took" "$rc")")
        FAILED=1
    fi
    return $rc
}

summary() {
    printf '\n%s==== summary%s\n' "$BOLD" "$PLAIN"
    printf '%s\n' "${SUMMARY[@]}"
    if [[ $FAILED == 0 ]]; then echo "all stages passed"; else echo "FAILED"; fi
}

# Without a working venv or services nothing after them means anything: stop there.
if ! stage bootstrap scripts/bootstrap.sh; then summary; exit 1; fi
if ! stage services scripts/services.sh; then summary; exit 1; fi

for cmd in "format ruff format --check ." "ruff ruff check ." "mypy mypy"; do
    # shellcheck disable=SC2086
    if ! stage $cmd && [[ -n "${DISTILL_FAIL_FAST:-}" ]]; then summary; exit 1; fi
done
stage pytest pytest "$@"

summary
exit $FAILED
