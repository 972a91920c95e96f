"""What posture uses from Python 3.11 that 3.10 (Ubuntu 22.04's python3) lacks, in one place.

`tomllib` is the `tomli` backport on 3.10 (the same parser, under its PyPI name; a dependency only there),
`StrEnum` a str-valued Enum whose str() is its value, `UTC` is `timezone.utc` (what `datetime.UTC` names).
"""

from __future__ import annotations

import sys
from datetime import timezone
from enum import Enum

UTC = timezone.utc

if sys.version_info >= (3, 11):
    from enum import StrEnum

    import tomllib
else:  # pragma: no cover - run only on 3.10
    import tomli as tomllib

    class StrEnum(str, Enum):
        """Members are strings: compared, formatted and printed as their values, as 3.11's StrEnum."""

        def __str__(self) -> str:
            return str(self.value)


__all__ = ["UTC", "StrEnum", "tomllib"]
