"""Version ordering that copes with what legacy estates report.

Cisco IOS `12.2(55)SE5`, OpenSSH `7.4p1`, OpenSSL `1.0.2k`, Windows `10.0.17763`, and pre-releases such
as `2.0.0-rc1`. A version is split into runs of digits and runs of letters; digits compare as numbers,
letters as text. When one version is a prefix of the other, what follows decides: a pre-release marker
(alpha, beta, rc, pre, dev) makes the longer one older (`2.0rc1` < `2.0`), anything else makes it newer
(`1.0.2k` > `1.0.2`, `7.4p1` > `7.4`).
"""

from __future__ import annotations

import re
from functools import total_ordering

MAX_LENGTH = 128  # a 10,000-character "version" is compared on its first 128 characters, in bounded time
_TOKEN = re.compile(r"\d+|[a-z]+")
PRE_RELEASE = frozenset({"alpha", "a", "beta", "b", "rc", "pre", "preview", "dev", "snapshot", "ea"})


def tokens(version: str) -> tuple[int | str, ...]:
    return tuple(int(t) if t.isdigit() else t for t in _TOKEN.findall(version[:MAX_LENGTH].lower()))


def _rank(token: int | str) -> tuple[int, int, str]:
    """Order between tokens of different kinds: pre-release < letters < numbers."""
    if isinstance(token, int):
        return (2, token, "")
    return (0 if token in PRE_RELEASE else 1, 0, token)


@total_ordering
class Version:
    __slots__ = ("parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text[:MAX_LENGTH]
        self.parts = tokens(text)

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def _compare(self, other: Version) -> int:
        for mine, theirs in zip(self.parts, other.parts, strict=False):
            a, b = _rank(mine), _rank(theirs)
            if a != b:
                return -1 if a < b else 1
        if len(self.parts) == len(other.parts):
            return 0
        longer, sign = (self.parts, 1) if len(self.parts) > len(other.parts) else (other.parts, -1)
        extra = longer[min(len(self.parts), len(other.parts))]
        newer = not (isinstance(extra, str) and extra in PRE_RELEASE)
        return sign if newer else -sign

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._compare(other) == 0

    def __lt__(self, other: Version) -> bool:
        return self._compare(other) < 0

    def __hash__(self) -> int:
        return hash(self.parts)

    def startswith(self, prefix: str) -> bool:
        """True when this version lies within the cycle `prefix` (`12.2(55)SE5` is in `12.2`)."""
        wanted = tokens(prefix)
        return self.parts[: len(wanted)] == wanted
