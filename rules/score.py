"""The posture score and the protect/detect/respond RAG: one definition for the evaluation's summary, the
report and the change hook, built so that an estate posture could not identify never looks safe.

- **Identified**: an asset whose operating system release and its support status are known. posture's
  rules judge what they can name; an asset they cannot name may run anything.
- **Score** = the share (in %) of ALL assets that are identified AND have no open, not accepted critical or
  high finding. An unidentified asset counts as not safe, whatever its findings: an estate nobody
  identified scores 0, not 100. The report prints this definition beside the number.
- **RAG**, per function: RED when a critical or high finding of that function is open (not accepted);
  otherwise AMBER when a medium one is; otherwise AMBER "insufficient data" when fewer than
  `[rules] min_coverage_percent` (default 90) of the assets are identified (or there are no assets at
  all): that function's rules could not see the rest; GREEN only when none of these holds.

The inputs are counts and sets, so the evaluation (which sees each finding as it writes it) and the
report (which reads the stored findings as of its own day) compute it the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rules.engine import SEVERITY_RANK

FUNCTIONS = ("protect", "detect", "respond")
SCORE_SEVERITIES = ("critical", "high")  # an asset with one of these open is not safe
AMBER_SEVERITIES = ("medium",)
INSUFFICIENT = "insufficient data"
DEFINITION = ("the share of all assets that are identified (operating system release and support status known) "
              "and have no open critical or high finding; an unidentified asset is counted as not safe")


@dataclass(frozen=True)
class Judgement:
    """A score and its RAG with the reasons a reader needs to believe them."""

    score: int  # 0-100
    assets: int
    identified: int
    safe: int  # identified and without an open critical/high finding
    coverage_percent: int  # identified / assets
    min_coverage_percent: int
    rag: dict[str, str] = field(default_factory=dict)  # function -> red | amber | green
    why: dict[str, str] = field(default_factory=dict)  # function -> the reason in words

    @property
    def unknown(self) -> int:
        return self.assets - self.identified

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unknown": self.unknown, "definition": DEFINITION}


def judge(assets: int, identified: int, unsafe_identified: int, worst: dict[str, str | None],
          min_coverage_percent: int = 90) -> Judgement:  # fmt: skip
    """`unsafe_identified`: identified assets with an open, not accepted critical or high finding; `worst`:
    per function, the worst severity open and not accepted there (None when nothing)."""
    safe = max(0, identified - unsafe_identified)
    coverage = round(100 * identified / assets) if assets else 0
    # floor, not round: 89.6% identified must not pass a 90% bar
    enough = assets > 0 and identified * 100 >= min_coverage_percent * assets
    rag, why = {}, {}
    for function in FUNCTIONS:
        severity = worst.get(function)
        if severity in SCORE_SEVERITIES:
            rag[function], why[function] = "red", f"a {severity} finding is open"
        elif severity in AMBER_SEVERITIES:
            rag[function], why[function] = "amber", f"a {severity} finding is open"
        elif not enough:
            rag[function] = "amber"
            why[function] = (f"{INSUFFICIENT}: no assets" if not assets else
                             f"{INSUFFICIENT}: {identified} of {assets} assets identified "
                             f"({coverage}% < {min_coverage_percent}%)")  # fmt: skip
        else:
            rag[function], why[function] = "green", "nothing above low open"
    score = round(100 * safe / assets) if assets else 0
    return Judgement(score=score, assets=assets, identified=identified, safe=safe, coverage_percent=coverage,
                     min_coverage_percent=min_coverage_percent, rag=rag, why=why)  # fmt: skip


def is_identified(os_item: dict[str, Any] | None) -> bool:
    """An asset's OS item names a release whose support status is known."""
    return bool(os_item) and (os_item or {}).get("lifecycle_state") not in (None, "unknown")


def worse(current: str | None, severity: str) -> str:
    """The worse of two severities (None: nothing yet)."""
    return severity if current is None or SEVERITY_RANK[severity] > SEVERITY_RANK[current] else current
