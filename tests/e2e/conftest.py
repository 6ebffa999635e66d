"""End-to-end: the API over HTTP (webhook dispatcher included), a real ``distill worker`` process on a queue
of its own, Postgres, Redis, moto_server, and headless Chromium (Debian's, through chromedriver).

``scripts/services.sh`` installs chromium and chromium-driver when missing; without them the browser test
fails in CI (``CI`` set) and skips elsewhere.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from helpers import delete_queue_keys, free_port, start_worker, stop_process, wait_for
from services_app import new_key, prepare, settings_from_env

from api.app import create_app
from distill.settings import Settings


@dataclass
class Stack:
    url: str
    settings: Settings
    worker_log: Path

    def key(self, tenant: str) -> str:
        return new_key(self.settings, tenant)


@pytest.fixture(scope="session")
def e2e_stack(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        **services_env,
        "DISTILL_QUEUE_NAME": f"{services_env['DISTILL_QUEUE_NAME']}-e2e",
        "DISTILL_TORCH_THREADS": "1",
    }
    settings = settings_from_env(env).model_copy(
        update={"webhook_poll_seconds": 0.2, "webhook_retry_base_seconds": 0.5, "stream_poll_seconds": 0.2}
    )
    prepare(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, timeout=30)
    log_path = tmp_path_factory.mktemp("e2e-worker") / "worker.log"
    worker = start_worker(env, log_path)
    try:
        yield Stack(url=url, settings=settings, worker_log=log_path)
    finally:
        stop_process(worker)
        server.should_exit = True
        thread.join(timeout=10)
        delete_queue_keys(settings.broker_url, settings.queue_name)
        if os.environ.get("DISTILL_TEST_SHOW_WORKER_LOG"):
            print(log_path.read_text())


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium; downloads go to ``browser.download_dir``."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        message = (
            "chromium/chromedriver missing: scripts/services.sh installs Debian's chromium chromium-driver"
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.download_dir = downloads
    try:
        yield driver
    finally:
        driver.quit()
