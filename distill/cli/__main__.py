"""``python -m distill.cli``: the ``distill`` command without relying on PATH."""

from distill.cli import app

if __name__ == "__main__":  # importing the module (e.g. walking the package) runs nothing
    app()
