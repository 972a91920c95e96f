"""The rules stage as a library: the settings and rules a config file names, and one evaluation of an
inventory. `posture evaluate` and a scheduled job (the application layer, `posture.jobs`) both call these,
so a job evaluates exactly as the command does, without going through click."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from scanner.errors import PostureError
from scanner.store import Store


def settings_from(config: dict[str, Any]) -> Any:
    """The [rules] settings of a loaded config (horizon, SLAs, ...), or a clear error."""
    from rules.engine import RuleError, Settings

    try:
        return Settings.from_config(config)
    except RuleError as exc:
        raise PostureError(str(exc), "fix the [rules] table of the config file") from exc


def rules_from(config: dict[str, Any], extra_dirs: Sequence[Path] = ()) -> Any:
    """The built-in rules, then the packs of the config's [rules] dirs and `extra_dirs` (--rules), and the
    TLS grading table they read: all checked before anything is evaluated."""
    from rules.engine import RuleError, load_rules
    from rules.tls import GradingError, grading

    configured = config.get("rules", {}).get("dirs", [])
    if not isinstance(configured, list):
        configured = []
    config_dirs = [Path(d).expanduser() for d in configured if isinstance(d, str)]
    try:
        rules = load_rules([*config_dirs, *extra_dirs], settings_from(config))
    except RuleError as exc:
        raise PostureError(str(exc), "fix the rule pack (`posture rules lint DIR` checks it)") from exc
    try:
        grading()
    except GradingError as exc:
        raise PostureError(str(exc), "fix rules/data/tls_grading.toml") from exc
    return rules


def evaluate_inventory(
    store: Store,
    config: dict[str, Any],
    day: date,
    rules: Any = None,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Apply the rules (`rules_from(config)` unless given) to the inventory and record the findings
    (`rules.findings.evaluate`) with the shipped catalogue and KEV list; runs a crashed scan left behind
    are marked interrupted first."""
    from rules.catalogue import default_catalogue
    from rules.findings import evaluate
    from rules.kev import default_kev

    if rules is None:
        rules = rules_from(config)
    store.reap_stale_scans()
    return evaluate(store, rules, default_catalogue(), default_kev(), day, settings_from(config), progress)
