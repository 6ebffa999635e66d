"""Where the user commands find the API: flags, then ``DISTILL_API_URL``/``DISTILL_API_KEY``, then a
config file, then the default URL (``http://127.0.0.1:8000``).

The config file is TOML at ``$DISTILL_CONFIG``, else ``config.toml`` in the per-user config folder
(``~/.config/distill/config.toml`` on Linux)::

    api_url = "https://distill.example.com"
    api_key = "dsk_…"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_config_path

from distill.client.sdk import DEFAULT_API_URL


class ConfigError(ValueError):
    """A config file that exists but cannot be read; the message names the file."""


def config_path() -> Path:
    explicit = os.environ.get("DISTILL_CONFIG")
    return Path(explicit).expanduser() if explicit else user_config_path("distill") / "config.toml"


def read_config(path: Path | None = None) -> dict[str, str]:
    """The config file's ``api_url``/``api_key`` (an absent file is an empty config)."""
    path = path or config_path()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    unknown = sorted(set(raw) - {"api_url", "api_key"})
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (expected api_url, api_key)")
    return {key: str(value) for key, value in raw.items()}


@dataclass(frozen=True)
class Target:
    """The API a command talks to."""

    api_url: str
    api_key: str | None


def resolve(api_url: str | None, api_key: str | None) -> Target:
    """Flags and environment come in through typer (``envvar=``); the config file fills what is left."""
    config = read_config() if api_url is None or api_key is None else {}
    return Target(
        api_url=api_url or config.get("api_url") or DEFAULT_API_URL,
        api_key=api_key or config.get("api_key") or None,
    )
