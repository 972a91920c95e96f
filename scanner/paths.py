"""Where posture keeps its files: XDG base directories, overridable by flag or environment."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "posture"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "posture"


def state_dir() -> Path:
    """Run state (jobs' last runs, their locks, the run log): `$XDG_STATE_HOME/posture`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "posture"


def default_db_path() -> Path:
    """`POSTURE_DB` wins over the XDG default, so a scheduler can point every command at one file."""
    env = os.environ.get("POSTURE_DB")
    return Path(env) if env else data_dir() / "inventory.db"


def default_config_path() -> Path:
    env = os.environ.get("POSTURE_CONFIG")
    return Path(env) if env else config_dir() / "config.toml"
