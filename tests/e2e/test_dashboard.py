"""The dashboard in headless Chromium, against the whole stack: sign in with a key, submit a spec, watch the
curves appear live, download the model; and the webhook that says the job is done.

A screenshot of the finished job page is taken on every run; ``DISTILL_UPDATE_SCREENSHOT=1`` keeps it as
docs/dashboard.png (the README shows it), otherwise it goes to the test's temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.receiver import receiver
from helpers import wait_for

from distill.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
TEACHER = {
    "name": "e2e-teacher",
    "data": {"train": {"builtin": "digits"}},
    "model": {"arch": "mlp", "hidden": [128]},
    "training": {"epochs": 4, "batch_size": 64, "learning_rate": 0.005},
}


def student_spec(teacher_id: str) -> dict[str, Any]:
    return {
        "name": "e2e-student",
        "data": {"train": {"builtin": "digits"}},
        "model": {"arch": "mlp", "hidden": [24]},
        "teacher": {"job": teacher_id},
        "baseline": True,
        "training": {"epochs": 6, "batch_size": 64, "learning_rate": 0.005},
    }


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def points(driver: Any, role: str) -> int:
    paths = all_css(driver, f"#acc-chart path.series-{role}")
    return int(paths[0].get_attribute("data-points")) if paths else 0


def test_sign_in_submit_watch_the_curves_download_the_model_and_get_the_webhook(e2e_stack, browser, tmp_path):
    key = e2e_stack.key("browser-co")
    api = httpx.Client(base_url=e2e_stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    teacher = api.post("/v1/jobs", json=TEACHER).json()
    with receiver() as hooks:
        hook = api.post("/v1/webhooks", json={"url": hooks.url}).json()

        browser.get(e2e_stack.url + "/")
        by_css(browser, "#key").send_keys(key)
        by_css(browser, "#signin").click()
        wait_for(lambda: by_css(browser, "#view-jobs").is_displayed(), timeout=20)
        wait_for(
            lambda: (
                teacher["id"]
                in [r.get_attribute("data-id") for r in all_css(browser, "#jobs-table tbody tr")]
            )
        )

        wait_for(lambda: api.get(f"/v1/jobs/{teacher['id']}").json()["status"] == "succeeded", timeout=240)

        # Submit the student through the form.
        browser.get(e2e_stack.url + "/#/submit")
        spec_box = by_css(browser, "#spec")
        browser.execute_script(
            "arguments[0].value = arguments[1]", spec_box, json.dumps(student_spec(teacher["id"]))
        )
        by_css(browser, "#submit").click()
        wait_for(lambda: "#/jobs/job_" in browser.current_url, timeout=20)
        job_id = browser.current_url.rsplit("/", 1)[-1]

        # The distilled student's curve grows while the job runs, fed by the event stream.
        wait_for(lambda: points(browser, "student") >= 1, timeout=240, interval=0.2)
        wait_for(lambda: by_css(browser, "#job-status").text == "succeeded", timeout=240, interval=0.3)
        wait_for(lambda: points(browser, "student") == 6 and points(browser, "baseline") == 6, timeout=20)
        assert all_css(browser, "#acc-chart line.series-teacher"), "the teacher's accuracy line is missing"
        assert "job succeeded" in by_css(browser, "#events").text
        assert json.loads(by_css(browser, "#job-spec").text)["teacher"] == {
            "job": teacher["id"],
            "weight": 1.0,
        }

        # Download the model from the artifact list: the bytes the API lists.
        link = wait_for(lambda: all_css(browser, '#artifacts a[data-name="model.safetensors"]'), timeout=20)[
            0
        ]
        shot = SCREENSHOT if os.environ.get("DISTILL_UPDATE_SCREENSHOT") else tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        link.click()
        target = browser.download_dir / "model.safetensors"
        wait_for(lambda: target.exists() and target.stat().st_size > 0, timeout=30)
        artifacts = {a["name"]: a for a in api.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]}
        wait_for(
            lambda: (
                hashlib.sha256(target.read_bytes()).hexdigest() == artifacts["model.safetensors"]["sha256"]
            ),
            timeout=10,
        )

        # The webhook said so too, signed with the secret shown at registration.
        def done_hook() -> Any:
            return next(
                (
                    r
                    for r in hooks.requests
                    if r.json["data"]["job"]["id"] == job_id and r.json["type"] == "job.succeeded"
                ),
                None,
            )

        request = wait_for(done_hook, timeout=30)
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert verify_signature(
            hook["secret"], headers[TIMESTAMP_HEADER.lower()], request.body, headers[SIGNATURE_HEADER.lower()]
        )
        assert request.json["data"]["job"]["result"]["test_accuracy"] > 0.5
        sent = [r.json["type"] for r in hooks.requests if r.json["data"]["job"]["id"] == job_id]
        assert sent == ["job.queued", "job.running", "job.succeeded"]
    api.close()


def test_a_wrong_key_is_refused_on_the_page(e2e_stack, browser):
    browser.get(e2e_stack.url + "/")
    by_css(browser, "#key").send_keys("dk_not_a_key")
    by_css(browser, "#signin").click()
    wait_for(lambda: by_css(browser, "#signin-error").text, timeout=20)
    assert "invalid" in by_css(browser, "#signin-error").text
    assert by_css(browser, "#view-signin").is_displayed()
