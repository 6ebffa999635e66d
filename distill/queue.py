"""The queue edge both sides share: one Celery app configuration and the name of the one task.

The API only *sends* ``run_job(job_id)`` by name (it never imports the worker); the worker registers the task
on the same app configuration. The message carries only the job id: Postgres is the source of truth.
"""

from __future__ import annotations

from celery import Celery

from distill.settings import Settings

RUN_JOB_TASK = "distill.run_job"


def make_celery(settings: Settings) -> Celery:
    app = Celery("distill", broker=settings.broker_url)
    conf: dict[str, object] = {
        "task_default_queue": settings.queue_name,
        "task_ignore_result": True,
        "task_acks_late": True,  # a worker that dies mid-job leaves the message for another
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # one training job at a time per worker process
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
    }
    if settings.broker_url.startswith("filesystem://"):
        folder = settings.queue_folder
        for sub in ("messages", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "messages"),
            "data_folder_out": str(folder / "messages"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    else:
        # Redis: redeliver an unacknowledged message after this long. Lost workers are found sooner by
        # their lease (the reconciler); this redelivery is only a backstop (the claim ignores duplicates).
        # A broker that does not answer fails a send within seconds (the row is the truth: the
        # reconciler sends the wake-up again), instead of holding an API request.
        conf["broker_transport_options"] = {
            "visibility_timeout": 6 * 3600,
            "socket_connect_timeout": 2,
            "socket_timeout": 10,
        }
    app.conf.update(conf)
    return app


def enqueue_job(app: Celery, job_id: str, queue: str | None = None) -> None:
    """Send the wake-up for ``job_id`` to ``queue`` (a job's ``resources.queue``) or the default queue;
    raises at once when the broker is down (no publish retries: the reconciler sends it later)."""
    if queue:
        app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue, retry=False)
    else:
        app.send_task(RUN_JOB_TASK, args=[job_id], retry=False)
