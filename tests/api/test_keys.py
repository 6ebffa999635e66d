"""``distill keys list|revoke``, and ``last_used_at`` written at most once a minute."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from distill.clock import utcnow
from distill.db import transaction
from distill.keys import KeyNotFound, list_keys, revoke_key
from distill.tables import ApiKey

ROOT = Path(__file__).resolve().parents[2]


def cli(api_settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DISTILL_DATABASE_URL": api_settings.database_url,
        "DISTILL_HOME": str(api_settings.home),
    }
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", "keys", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def key_row(client, bearer: dict[str, str]) -> ApiKey:
    prefix = bearer["Authorization"].removeprefix("Bearer ")[:10]
    session: Session
    with client.app_state.session_factory() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        assert row is not None
        return row


def test_cli_lists_keys_by_prefix_and_tenant_and_revokes_one(client, api_settings, acme, globex):
    acme_prefix = acme["Authorization"].removeprefix("Bearer ")[:10]
    globex_prefix = globex["Authorization"].removeprefix("Bearer ")[:10]
    assert client.get("/v1/jobs", headers=acme).status_code == 200

    listed = cli(api_settings, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "prefix", "tenant", "created"]
    acme_line = next(line for line in lines if acme_prefix in line)
    globex_line = next(line for line in lines if globex_prefix in line)
    assert " acme " in acme_line and " globex " in globex_line
    assert acme["Authorization"].removeprefix("Bearer ") not in listed.stdout  # never the secret
    assert acme_line.rstrip().endswith("Z")  # acme's key was used: a last-used time
    assert globex_line.rstrip().endswith("-")  # globex's never was

    only = cli(api_settings, "list", "--tenant", "globex")
    assert globex_prefix in only.stdout and acme_prefix not in only.stdout

    revoked = cli(api_settings, "revoke", acme_prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    assert client.get("/v1/jobs", headers=acme).status_code == 401
    assert client.get("/v1/jobs", headers=globex).status_code == 200
    assert acme_prefix not in cli(api_settings, "list").stdout
    assert acme_prefix in cli(api_settings, "list", "--revoked").stdout

    again = cli(api_settings, "revoke", acme_prefix)
    assert again.returncode == 1
    assert "no live key" in again.stderr


def test_revoke_by_id(client, acme):
    row = key_row(client, acme)
    with transaction(client.app_state.session_factory) as session:
        info = revoke_key(session, row.id)
    assert info.tenant == "acme" and info.revoked_at is not None
    assert client.get("/v1/files", headers=acme).status_code == 401
    with transaction(client.app_state.session_factory) as session, pytest.raises(KeyNotFound):
        revoke_key(session, row.id)


def test_list_keys_reports_created_and_last_used(client, acme, globex):
    with client.app_state.session_factory() as session:
        keys = {k.tenant: k for k in list_keys(session)}
    assert set(keys) == {"acme", "globex"}
    assert keys["acme"].last_used_at is None
    assert keys["acme"].prefix.startswith("dsk_") and keys["acme"].created_at <= utcnow()


def test_last_used_is_written_at_most_once_a_minute(client, acme):
    assert key_row(client, acme).last_used_at is None
    client.get("/v1/jobs", headers=acme)
    first = key_row(client, acme).last_used_at
    assert first is not None
    client.get("/v1/jobs", headers=acme)
    assert key_row(client, acme).last_used_at == first  # used again within the minute: no write

    earlier = utcnow() - timedelta(minutes=2)
    with transaction(client.app_state.session_factory) as session:
        session.execute(update(ApiKey).values(last_used_at=earlier))
    client.get("/v1/jobs", headers=acme)
    refreshed = key_row(client, acme).last_used_at
    assert refreshed is not None and refreshed > earlier + timedelta(minutes=1)
