r"""Refuses rule patterns (`matches`) whose backtracking can run away on a hostile banner (ReDoS).

Python's `re` backtracks: `^(a+)+$` against 35 `a`s and a `b` tries 2^35 ways and runs for hours, and
`.*.*.*x` against 4 KiB takes hours too. A device chooses its banner, so a pattern in a rule pack must not
be able to match the same text in many ways. `problem()` walks the pattern as `re` parses it and refuses:

1. a repeat (`+`, `*`, `{2,}`, `{n}`, ...) whose body can match the same text in two ways from one pass
   to the next: `(a+)+`, `(a*)*`, `(.*a){20}`, `(x+x+)+`, `(a{1,10}){1,10}`. `(\d{1,3}\.){3}` is
   fine: the `.` ends each pass.
2. a repeat over alternatives that can start with the same character, or that can match nothing:
   `(a|a)+`, `(a|aa)+`, `(a|b|ab)*`. `(ftp|http)+` is fine.
3. repeats one after the other that can trade characters, with nothing between them that only one of
   them can take: their choices multiply (a repeat of 1 to 3 has 3, an unbounded one 4,096: the most
   characters a pattern is matched against), and more than 16,384 is refused. So `.*.*`, `.*foo.*bar` and
   `\w+\d+` are refused, while `\d+\.\d+`, `"[^"]*"[^"]*"` and `.*\d{1,3}` are fine. A leading or
   trailing `.*` is never needed (a pattern is searched for anywhere in the value): `foo.*bar` says what
   `.*foo.*bar.*` says.

The check is conservative (it may refuse a safe pattern, never on purpose let through one of these
shapes), and the engine also matches only the first 4 KiB of a value, so what gets through stays bounded.
Characters are modelled exactly below U+0100, and as "some other character" above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from re import _constants as C  # type: ignore[attr-defined]  # the parse tree's opcodes
from re import _parser  # type: ignore[attr-defined]
from typing import Any

MAX_PATTERN = 1000  # characters; a rule's pattern is a short expression, not a program
MATCH_LIMIT = 4096  # characters of a value a pattern is matched against (rules.engine uses this)
BUDGET = 4 * MATCH_LIMIT  # rule 3: the most ways repeats in a row may share characters


@dataclass(frozen=True)
class Chars:
    """A set of characters: exactly those below U+0100, and whether any above it are in."""

    low: frozenset[int]
    high: bool

    def overlaps(self, other: Chars) -> bool:
        return bool(self.low & other.low) or (self.high and other.high)

    def __or__(self, other: Chars) -> Chars:
        return Chars(self.low | other.low, self.high or other.high)


NONE = Chars(frozenset(), False)
ALL = Chars(frozenset(range(256)), True)
CATEGORIES = {C.CATEGORY_DIGIT: r"\d", C.CATEGORY_NOT_DIGIT: r"\D", C.CATEGORY_SPACE: r"\s",
              C.CATEGORY_NOT_SPACE: r"\S", C.CATEGORY_WORD: r"\w", C.CATEGORY_NOT_WORD: r"\W"}  # fmt: skip
SINGLE = (C.LITERAL, C.NOT_LITERAL, C.ANY, C.IN, C.CATEGORY)
REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT)


class Refused(Exception):
    """The pattern has one of the shapes above; the message says which."""


def problem(pattern: str) -> str | None:
    """Why `pattern` is refused (it does not compile, is too long, or can backtrack without end), or None."""
    if len(pattern) > MAX_PATTERN:
        return f"a pattern is at most {MAX_PATTERN:,} characters"
    try:
        re.compile(pattern)
        _Walker().walk(_parser.parse(pattern), [], strict=False)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    except RecursionError:
        return "the pattern is nested too deeply"
    except Refused as exc:
        return str(exc)
    return None


def _cased(codes: range | list[int]) -> Chars:
    """These characters in either case (always: a pattern may turn on IGNORECASE anywhere)."""
    low: set[int] = set()
    high = False
    for code in codes:
        for variant in {chr(code), chr(code).lower(), chr(code).upper()}:
            if len(variant) == 1 and ord(variant) < 256:
                low.add(ord(variant))
            elif len(variant) == 1:
                high = True
    return Chars(frozenset(low), high)


@cache
def _category(code: Any) -> Chars:
    rx = CATEGORIES.get(code)
    if rx is None:  # a line-break or locale category: assume anything
        return ALL
    return Chars(frozenset(c for c in range(256) if re.fullmatch(rx, chr(c))), True)


def _complement(chars: Chars) -> Chars:
    return Chars(frozenset(range(256)) - chars.low, True)


def _single(op: Any, av: Any) -> Chars:
    """The characters one single-character node can match."""
    if op is C.LITERAL:
        return _cased([av]) if av < 256 else Chars(frozenset(), True)
    if op is C.NOT_LITERAL:
        return _complement(_cased([av])) if av < 256 else ALL
    if op is C.CATEGORY:
        return _category(av)
    if op is C.IN:
        found, negate = NONE, False
        for item_op, item in av:
            if item_op is C.NEGATE:
                negate = True
            elif item_op is C.LITERAL:
                found |= _single(C.LITERAL, item)
            elif item_op is C.RANGE:
                found |= _cased(range(item[0], min(item[1], 255) + 1)) | Chars(frozenset(), item[1] > 255)
            elif item_op is C.CATEGORY:
                found |= _category(item)
            else:
                return ALL
        return _complement(found) if negate else found
    return ALL  # ANY


def _every(seq: Any) -> Chars:
    """Every character any part of `seq` can match (a coarse bound for a repeat's body)."""
    out = NONE
    for op, av in seq:
        if op in SINGLE:
            out |= _single(op, av)
        elif op is C.SUBPATTERN:
            out |= _every(av[3])
        elif op is C.ATOMIC_GROUP:
            out |= _every(av)
        elif op is C.BRANCH:
            for branch in av[1]:
                out |= _every(branch)
        elif op is C.GROUPREF_EXISTS:
            out |= _every(av[1]) | (_every(av[2]) if av[2] else NONE)
        elif op in REPEATS:
            out |= _every(av[2])
        elif op is C.GROUPREF:
            return ALL
    return out


def _first(seq: Any) -> tuple[Chars, bool]:
    """The characters `seq` can start with, and whether it can match nothing at all."""
    out = NONE
    for op, av in seq:
        if op in SINGLE:
            return out | _single(op, av), False
        if op is C.SUBPATTERN or op is C.ATOMIC_GROUP:
            chars, empty = _first(av[3] if op is C.SUBPATTERN else av)
        elif op is C.BRANCH or op is C.GROUPREF_EXISTS:
            branches = av[1] if op is C.BRANCH else [av[1], av[2] or []]
            firsts = [_first(b) for b in branches]
            chars = NONE
            for f, _ in firsts:
                chars |= f
            empty = any(e for _, e in firsts)
        elif op in REPEATS:
            chars, empty = _first(av[2])
            empty = empty or av[0] == 0
        elif op is C.GROUPREF:
            return ALL, True
        else:  # zero width: anchors and lookarounds
            continue
        out |= chars
        if not empty:
            return out, False
    return out, True


def _check_branches(seq: Any) -> None:
    """Rule 2, for every alternation inside a repeat's body."""
    for op, av in seq:
        children: list[Any] = []
        if op is C.BRANCH or op is C.GROUPREF_EXISTS:
            branches = av[1] if op is C.BRANCH else [b for b in (av[1], av[2]) if b is not None]
            firsts = [_first(b) for b in branches]
            if any(empty for _, empty in firsts):
                raise Refused("a repeated group has an alternative that can match nothing, e.g. (a|)+ or (a|aa)+")
            for n, (chars, _) in enumerate(firsts):
                if any(chars.overlaps(other) for other, _ in firsts[n + 1 :]):
                    raise Refused("a repeated group has alternatives that can start alike, e.g. (a|b|ab)+: "
                                  "they can split the same text in many ways")  # fmt: skip
            children = branches
        elif op is C.SUBPATTERN:
            children = [av[3]]
        elif op is C.ATOMIC_GROUP:
            children = [av]
        elif op in REPEATS:
            children = [av[2]]
        elif op in (C.ASSERT, C.ASSERT_NOT):
            children = [av[1]]
        for child in children:
            _check_branches(child)


Open = list[tuple[Chars, int]]  # repeats that could still be taking characters: their set, their choices


@dataclass
class _Walker:
    """Rules 1 and 3 over a parsed pattern; each repeat's body is checked once (`checked`), so nested
    repeats cost a walk per level, not one per path."""

    checked: set[int] = field(default_factory=set)

    def walk(self, seq: Any, open_: Open, strict: bool) -> Open:
        """Check `seq`, entered with `open_`: the repeats before it that could still be taking characters,
        each with the choices of its chain. Returns those still open after it. With `strict` (inside a
        repeat's body, rule 1) any two repeats that can trade characters are refused."""
        for op, av in seq:
            if op in SINGLE:  # a character both could take keeps an earlier repeat in play
                chars = _single(op, av)
                open_ = [o for o in open_ if o[0].overlaps(chars)]
            elif op is C.SUBPATTERN:
                open_ = self.walk(av[3], open_, strict)
            elif op is C.ATOMIC_GROUP:
                open_ = self.walk(av, open_, strict)
            elif op is C.BRANCH or op is C.GROUPREF_EXISTS:
                branches = av[1] if op is C.BRANCH else [av[1], av[2] or []]
                open_ = [o for b in branches for o in self.walk(b, list(open_), strict)]
            elif op in (C.ASSERT, C.ASSERT_NOT):
                self.walk(av[1], [], strict)
            elif op in REPEATS:
                open_ = self.repeat(av, open_, strict)
            # GROUPREF (what a group matched) and anchors take nothing a repeat cares about
        return open_

    def repeat(self, av: Any, open_: Open, strict: bool) -> Open:
        low, high, body = av
        if high > 1 and id(body) not in self.checked:
            self.checked.add(id(body))
            _check_branches(body)
            once = self.walk(body, [], strict=True)
            try:
                self.walk(body, once, strict=True)  # a second pass that can take over where the first left off
            except Refused as exc:
                raise Refused("a repeat holds a repeat that can take the same characters (nested quantifiers, "
                              "e.g. (a+)+ or (.*a){20}): it can match one text in exponentially many ways") from exc
        after = self.walk(body, list(open_), strict)
        if low == 0:
            after = open_ + after
        if high == low:
            return after
        chars = _every(body)
        choices = MATCH_LIMIT if high == C.MAXREPEAT else min(high - low + 1, MATCH_LIMIT)
        chain = max((n for o, n in open_ if o.overlaps(chars)), default=1) * choices
        if chain > BUDGET or (strict and chain > choices):
            raise Refused("repeats in a row can take the same characters (e.g. .*.* or .*foo.*bar): drop a "
                          "leading or trailing .*, or make one of them stop at a character the other cannot take")
        return [*after, (chars, chain)]
