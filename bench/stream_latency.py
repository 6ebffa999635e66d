"""How live the live view is: from submission to the first events on the stream, and to the webhook.

Against a running stack (``distill standalone`` or Compose, with a worker):

    python -m bench.stream_latency --url http://127.0.0.1:8000 --key dk_... [--runs 3]

Per run it registers a loopback webhook receiver, submits a small digits job, reads
``/v1/jobs/{id}/events?stream=true`` and prints: submission to the first event (``job queued``), to
``job started``, to the first epoch event, and the lag between an event's ``created_at`` and its arrival on
the stream (the stream's polling interval bounds it), and submission to the ``job.succeeded`` webhook.

Then, per run, the same through the Python client as the CLI follows a job (``Client.follow_events``:
what ``distill jobs logs -f`` and ``jobs create --wait`` read): submission to the first event and to the
``end``, and a resumption: a new connection with ``Last-Event-ID`` two events before the end, to its first
event (what a dropped connection costs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from distill.client.sdk import Client

SPEC = {
    "name": "bench-stream",
    "data": {"train": {"builtin": "digits"}},
    "model": {"arch": "mlp", "hidden": [32]},
    "training": {"epochs": 3, "batch_size": 64},
}


def _receiver() -> tuple[ThreadingHTTPServer, dict[str, float]]:
    arrived: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            arrived[f"{body['data']['job']['id']}:{body['type']}"] = time.time()
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, arrived


def one_run(client: httpx.Client, arrived: dict[str, float]) -> dict[str, float]:
    submitted = time.time()
    job = client.post("/v1/jobs", json=SPEC).json()
    figures: dict[str, float] = {}
    lags: list[float] = []
    with client.stream("GET", f"/v1/jobs/{job['id']}/events?stream=true", timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            now = time.time()
            event = json.loads(line[5:])
            if "message" not in event:
                break  # the end block
            created = datetime.fromisoformat(event["created_at"]).astimezone(UTC).timestamp()
            lags.append(now - created)
            message = event["message"]
            figures.setdefault("first_event_s", now - submitted)
            if message.startswith("job started"):
                figures["job_started_s"] = now - submitted
            if message.startswith("epoch ") and "first_epoch_s" not in figures:
                figures["first_epoch_s"] = now - submitted
    figures["stream_lag_median_s"] = statistics.median(lags)
    figures["stream_lag_max_s"] = max(lags)
    deadline = time.time() + 60
    key = f"{job['id']}:job.succeeded"
    while key not in arrived and time.time() < deadline:
        time.sleep(0.05)
    if key in arrived:
        figures["webhook_succeeded_s"] = arrived[key] - submitted
    return figures


def client_run(api: Client) -> dict[str, float]:
    """Submission to the first event and to the end through ``Client.follow_events``, then a resumption."""
    submitted = time.perf_counter()
    job = api.create_job(SPEC)
    figures: dict[str, float] = {}
    seqs: list[int] = []
    for item in api.follow_events(job.id):
        if item.event is not None:
            seqs.append(item.event.seq)
            figures.setdefault("client_first_event_s", time.perf_counter() - submitted)
        if item.kind == "end":
            figures["client_end_s"] = time.perf_counter() - submitted
    resumed = time.perf_counter()
    after = seqs[-3] if len(seqs) >= 3 else None
    first = next(api.stream_events(job.id, after=after))
    if after is not None and first.seq == after + 1:
        figures["client_resume_first_event_s"] = time.perf_counter() - resumed
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    server, arrived = _receiver()
    client = httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"}, timeout=30)
    hook = client.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{server.server_address[1]}/"}).json()
    try:
        for run in range(args.runs):
            figures = one_run(client, arrived)
            with Client(args.url, args.key) as api:
                figures |= client_run(api)
            print(f"run {run + 1}: " + ", ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    finally:
        client.delete(f"/v1/webhooks/{hook['id']}")
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
