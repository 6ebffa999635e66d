#!/usr/bin/env bash
# Make sure the services the tests use are up: Postgres (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379).
# As root, installs missing server packages with apt-get, Debian's docker-compose (only used to validate
# docker-compose.yml; failing to get it never fails this script, the compose test then skips) and Debian's
# chromium + chromium-driver (the dashboard's browser test).
# The S3-compatible server (moto_server) is started by pytest itself (tests/conftest.py).
#
#   DISTILL_NO_APT=1   never run apt-get
set -euo pipefail
# shellcheck source=scripts/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
APT_FAILED_MARK="${TMPDIR:-/tmp}/distill-apt-docker-compose.failed"

can_apt() { [[ "$(id -u)" == 0 && -z "${DISTILL_NO_APT:-}" ]] && command -v apt-get >/dev/null 2>&1; }

# apt_install PKG...: install, running `apt-get update` (at most once per run) only if the first try fails.
apt_install() {
    can_apt || return 1
    local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
    if apt-get install "${opts[@]}" "$@" >/tmp/distill-apt.log 2>&1; then
        return 0
    fi
    if [[ "$APT_UPDATED" == 0 ]]; then
        APT_UPDATED=1
        log "apt-get update"
        timeout 300 apt-get update -q -o DPkg::Lock::Timeout=300 >>/tmp/distill-apt.log 2>&1 || true
        apt-get install "${opts[@]}" "$@" >>/tmp/distill-apt.log 2>&1 && return 0
    fi
    log "apt-get install $* failed; last lines of /tmp/distill-apt.log:"
    tail -n 5 /tmp/distill-apt.log >&2 || true
    return 1
}

# wait_until SECONDS CMD...: poll CMD until it succeeds.
wait_until() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]]; }

ensure_postgres() {
    if command -v pg_isready >/dev/null 2>&1 && pg_up; then
        log "postgres: up"
        return 0
    fi
    local fresh=0
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "postgres: not installed; apt-get install postgresql"
        apt_install postgresql || die "postgres is not installed and could not be installed (need root + apt)"
        fresh=1
    fi
    local version
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$version" ]] || die "postgres: no cluster under /etc/postgresql"
    if [[ "$fresh" == 1 ]]; then
        # A fresh Debian cluster wants passwords over TCP; the tests connect as postgres without one.
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    if ! pg_up; then
        log "postgres: starting cluster $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>&1 | grep -v 'already running' >&2 || true
    fi
    wait_until 30 pg_up || die "postgres: not answering on 127.0.0.1:5432 after start"
    log "postgres: started"
}

ensure_redis() {
    if command -v redis-cli >/dev/null 2>&1 && redis_up; then
        log "redis: up"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        log "redis: not installed; apt-get install redis-server"
        apt_install redis-server || die "redis is not installed and could not be installed (need root + apt)"
    fi
    if ! redis_up; then
        log "redis: starting"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
    fi
    wait_until 15 redis_up || die "redis: not answering on 127.0.0.1:6379 after start"
    log "redis: started"
}

ensure_docker_compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        log "docker-compose: $(docker-compose version --short 2>/dev/null || echo present)"
        return 0
    fi
    if ! can_apt; then
        log "docker-compose: missing (not root or DISTILL_NO_APT set); the compose test will skip"
        return 0
    fi
    # Do not retry a failed install on every run for an hour.
    if [[ -n "$(find "$APT_FAILED_MARK" -mmin -60 2>/dev/null)" ]]; then
        log "docker-compose: missing (install failed less than an hour ago); the compose test will skip"
        return 0
    fi
    log "docker-compose: missing; apt-get install docker-compose"
    if apt_install docker-compose; then
        rm -f "$APT_FAILED_MARK"
        log "docker-compose: installed $(docker-compose version --short 2>/dev/null || true)"
    else
        touch "$APT_FAILED_MARK"
        log "docker-compose: could not be installed; the compose test will skip"
    fi
}

# Debian's chromium and its driver, for the dashboard's browser test (tests/e2e). Like docker-compose: a
# failed install never fails this script; the browser test then fails in CI and skips elsewhere.
CHROMIUM_FAILED_MARK="${TMPDIR:-/tmp}/distill-apt-chromium.failed"
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        log "chromium: $(chromium --version 2>/dev/null || echo present)"
        return 0
    fi
    if ! can_apt || [[ -n "$(find "$CHROMIUM_FAILED_MARK" -mmin -60 2>/dev/null)" ]]; then
        log "chromium: missing and not installable now; the browser test will not run"
        return 0
    fi
    log "chromium: missing; apt-get install chromium chromium-driver"
    if apt_install chromium chromium-driver; then
        rm -f "$CHROMIUM_FAILED_MARK"
        log "chromium: installed"
    else
        touch "$CHROMIUM_FAILED_MARK"
        log "chromium: could not be installed; the browser test will not run"
    fi
}

services() {
    ensure_postgres
    ensure_redis
    ensure_docker_compose || true
    ensure_chromium || true
}

with_lock services services
