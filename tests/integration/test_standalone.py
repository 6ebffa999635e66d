"""``distill standalone``, the first minute: a key on first start, one home for every command, and
SIGTERM stopping its worker too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import free_port, wait_for

from distill import Client

pytestmark = pytest.mark.integration

DISTILL = [sys.executable, "-m", "distill.cli"]


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    env["DISTILL_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if fields[1] == str(pid) and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[0] not in ("Z", "X")


def test_a_command_against_a_home_that_does_not_exist_says_so(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    done = subprocess.run(
        [*DISTILL, "keys", "create", "--tenant", "acme"], env=clean_env(home), capture_output=True, text=True
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(home) in lines[0] and "distill standalone" in lines[0]
    assert not home.exists()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_first_start_prints_a_working_key_and_sigterm_stops_the_worker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    log = tmp_path / "standalone.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*DISTILL, "standalone", "--port", str(port)],
            env=clean_env(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=120, interval=0.3)
        text = wait_for(lambda: "export DISTILL_API_URL" in log.read_text() and log.read_text(), timeout=30)
        match = re.search(r"export DISTILL_API_URL=(\S+) DISTILL_API_KEY=(\S+)", text)
        assert match, text
        assert match.group(1) == url
        assert "distill jobs create examples/" in text
        with Client(match.group(1), match.group(2)) as client:
            assert client.list_jobs().data == []
        workers = wait_for(lambda: children(server.pid), timeout=30)

        # Only the standalone process gets SIGTERM (as from systemd or `kill`), not its process group.
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        assert all(not alive(pid) for pid in workers), log.read_text()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    # Every command finds the same home, whatever folder it runs in.
    second = subprocess.run(
        [*DISTILL, "keys", "create", "--tenant", "acme"], env=clean_env(home), capture_output=True, text=True
    )
    assert second.returncode == 0 and second.stdout.strip().startswith("dsk_"), second.stderr
