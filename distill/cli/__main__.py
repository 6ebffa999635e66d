"""``python -m distill.cli``: the ``distill`` command without relying on PATH."""

from distill.cli import app

app()
