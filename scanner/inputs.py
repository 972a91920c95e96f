"""Files a user hands posture (the asset register, a cost table, the config): read within a size bound,
decoded, parsed, or refused in one line that names the file and line.

Why one module: the register, the cost table and the config are all typed by people and exported from
spreadsheets, and each met the same failures (a huge cell, an unclosed quote, deep nesting, two encodings
in one file). Each parser here turns every such failure into a `PostureError` (exit 2) and nothing else.

CSV rules, the same for every CSV posture reads:
- Each line is UTF-8 (a BOM is skipped) or, failing that, Windows-1252: decided line by line, so a register
  pasted together from two exports keeps both halves readable. A line that is neither is refused, as is a
  UTF-16 file (save it as "CSV UTF-8").
- A cell holds no line break. A quoted cell that runs over the end of its line is refused: in these files
  it is almost always a quote that was never closed, and reading on would swallow the next rows into it.
- A cell is at most `csv.field_size_limit()` characters (128 Ki), a line at most `MAX_LINE` bytes (1 MiB).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from scanner.compat import tomllib
from scanner.errors import PostureError
from scanner.paths import read_regular_file

MAX_LINE = 1 << 20  # bytes: a row of a register or cost table is never near this


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (a FIFO or a folder is refused, not read: see
    `scanner.paths.read_regular_file`, which every reader of outside files shares)."""
    if not path.exists():
        raise PostureError(f"no such file: {path}", f"give the path of the {what}")
    return read_regular_file(path, limit, f"a {what}", f"is this the {what}?")


def decoded_lines(raw: bytes, where: str) -> Iterator[str]:
    """The lines of a text file, each decoded as UTF-8 or else Windows-1252 (see the module notes).

    Lines end at LF, CRLF or a lone CR (old Mac exports); they are produced one at a time, so a file of
    millions of empty lines costs no more memory than its bytes.
    """
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise PostureError(f"{where} is UTF-16 text", 'save it as "CSV UTF-8" or plain CSV')
    n = 0
    for chunk in io.BytesIO(raw.removeprefix(codecs.BOM_UTF8)):
        for line in chunk.splitlines():
            n += 1
            if len(line) > MAX_LINE:
                raise PostureError(f"{where}:{n}: the line is longer than {MAX_LINE:,} bytes", "is this a CSV file?")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                try:
                    text = line.decode("cp1252")
                except UnicodeDecodeError:
                    raise PostureError(f"{where}:{n}: this line is neither UTF-8 nor Windows-1252 text",
                                       'save the file as "CSV UTF-8"') from None  # fmt: skip
            yield text


def csv_rows(lines: Iterator[str], where: str, dialect: type[csv.Dialect] | csv.Dialect = csv.excel
             ) -> Iterator[tuple[int, list[str]]]:  # fmt: skip
    """(line number, cells) for each row of `lines`; any malformed row is refused naming its line."""
    reader = csv.reader(lines, dialect, strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem, hint = _csv_refusal(str(exc))
            raise PostureError(f"{where}:{start}: {problem}", hint) from None
        if reader.line_num != start or any("\n" in cell or "\r" in cell for cell in row):
            raise PostureError(f"{where}:{start}: a quoted cell runs on past the end of its line "
                               "(a quote that is never closed?)", _QUOTE_HINT)  # fmt: skip
        yield start, row
        start = reader.line_num + 1


_QUOTE_HINT = "close the quote, and keep each cell on one line"


def _csv_refusal(message: str) -> tuple[str, str]:
    """What a csv.Error means in these files, and the next step."""
    if "field larger than field limit" in message:
        return f"a cell is longer than {csv.field_size_limit():,} characters", "shorten it; is this the right file?"
    if "unexpected end of data" in message:
        return "a quote is not closed before the end of the file", _QUOTE_HINT
    return f"not valid CSV ({message})", _QUOTE_HINT


def header_duplicate(names: Sequence[str | None]) -> tuple[int, int] | None:
    """The 0-based columns of the first two headers meaning the same thing (None: not a column that
    counts), or None: a second column of one name is refused rather than silently dropped or merged."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name is None:
            continue
        if name in first:
            return first[name], i
        first[name] = i
    return None


def load_toml(path: Path, limit: int, what: str) -> tuple[dict[str, Any], str]:
    """A TOML file as data and text (for line numbers); bad syntax, bad UTF-8, a huge integer and nesting
    deep enough to exhaust Python's recursion (tomllib recurses per level) are each one refusal."""
    raw = read_bounded(path, limit, what)
    try:
        text = raw.decode("utf-8-sig")
        return tomllib.loads(text), text
    except UnicodeDecodeError as exc:
        raise PostureError(f"{path} is not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None
    except ValueError as exc:  # TOMLDecodeError, and an integer of more than 4,300 digits
        raise PostureError(f"{path} is not valid TOML: {str(exc)[:200]}", "fix the file") from None
    except RecursionError:
        raise PostureError(f"{path}: arrays or tables are nested too deeply", "fix the file") from None


def key_line(text: str, table: Sequence[str], key: str | None = None) -> int:
    """The line of `key` in the TOML table `table` (or of the table's header, or of `table = ...` written
    inline), for error messages; 1 when it cannot be found."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(rf'"?{re.escape(part)}"?' for part in table) + r"\s*\]")
    start = next((n for n, line in enumerate(lines) if header.match(line)), None)
    if start is None:  # `rules = 5`, `rules.sla_days = 5`, or an inline table
        inline = re.compile(rf'^\s*"?{re.escape(table[0])}"?\s*[=.]') if table else None
        return next((n + 1 for n, line in enumerate(lines) if inline and inline.match(line)), 1)
    if key is not None:
        pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*[=.]')
        for n in range(start + 1, len(lines)):
            if lines[n].lstrip().startswith("["):
                break
            if pattern.match(lines[n]):
                return n + 1
    return start + 1
