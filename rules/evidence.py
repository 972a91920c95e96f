"""A finding's evidence in plain words, from the phrase table `rules/data/evidence.toml`.

An asset rule's evidence used to be the facts it tested as `field=value` pairs (`os_known=True,
os_lifecycle_state='unknown'`), which a security lead cannot act on. Each fact now reads as the table says
("operating system not identified: nmap's best guess was Linux 3.2 - 4.9 at 95%"); a fact with no phrase
(a rule pack of the council's own may test any fact) keeps the `field=value` form, so nothing is hidden.
The phrases are data, checked by `lint` (known facts and placeholders) when `posture rules lint` runs.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from scanner.compat import tomllib
from scanner.model import printable

PHRASES_FILE = Path(__file__).parent / "data" / "evidence.toml"
PLACEHOLDER = re.compile(r"\{([a-z_]{1,40})\}")
SPECIAL = {"value", "os", "os_guess"}  # placeholders that are not asset facts (see `_fill`)
MAX_VALUE = 120  # characters of one fact's value in a phrase
MAX_EVIDENCE = 500


METHODS = "methods"  # the table of identification methods in words (not an asset fact)


@cache
def table() -> dict[str, dict[str, str]]:
    with PHRASES_FILE.open("rb") as f:
        return {k: dict(v) for k, v in tomllib.load(f).items()}


def phrases() -> dict[str, dict[str, str]]:
    """Asset fact -> its phrases."""
    return {k: v for k, v in table().items() if k != METHODS}


def said_by(method: str | None, text: str | None) -> str:
    """An item's evidence: who said it, in words, and what they said ("nmap's OS detection said: ...")."""
    who = table().get(METHODS, {}).get(method or "", method or "unknown source")
    return f"{who} said: {text or ''}"


def lint(table: dict[str, Any], fields: set[str]) -> list[str]:
    """Problems of a phrase table: unknown facts, keys that are not phrases, unknown placeholders."""
    problems = []
    for name, forms in table.items():
        if name == METHODS:
            if not isinstance(forms, dict) or not all(isinstance(p, str) for p in forms.values()):
                problems.append(f"[{METHODS}]: each method's words must be text")
            continue
        if name not in fields:
            problems.append(f"[{name}]: not an asset fact")
            continue
        if not isinstance(forms, dict) or not all(isinstance(p, str) for p in forms.values()):
            problems.append(f"[{name}]: each key must be a phrase (text)")
            continue
        for key, phrase in forms.items():
            for placeholder in PLACEHOLDER.findall(phrase):
                if placeholder not in SPECIAL and placeholder not in fields:
                    problems.append(f"[{name}] {key}: unknown placeholder {{{placeholder}}}")
    return problems


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(printable(v, 40) for v in value[:5])
    return printable("" if value is None else value, MAX_VALUE)


def _fill(phrase: str, name: str, asset: dict[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "value":
            return _text(asset.get(name))
        if key == "os":
            summary = asset.get("os_summary") or {}
            said = summary.get("label") or " ".join(str(x) for x in (summary.get("product"), summary.get("cycle")) if x)
            return printable(said, MAX_VALUE) if said else "not named"
        if key == "os_guess":
            guess = asset.get("os_guess")
            return f": nmap's best guess was {printable(guess, MAX_VALUE)}" if guess else ""
        return _text(asset.get(key))

    return PLACEHOLDER.sub(one, phrase)


def say(names: list[str], asset: dict[str, Any]) -> str:
    """The tested facts of an asset in words, in the rule's order; a phrase said once."""
    table = phrases()
    out: list[str] = []
    for name in names:
        value = asset.get(name)
        forms = table.get(name)
        if forms is None:
            out.append(f"{name}={value!r}")
            continue
        key = _text(value) if isinstance(value, bool | str) else "value"
        phrase = forms.get(key, forms.get("value"))
        if phrase is None:
            out.append(f"{name}={value!r}")
        elif phrase and (text := _fill(phrase, name, asset)) not in out:
            out.append(text)
    return "; ".join(out)[:MAX_EVIDENCE]
