"""The store's connection: an SQLite file or a PostgreSQL database, behind one small layer.

Why plain SQL and a dialect layer rather than SQLAlchemy (docs/store-port.md measures both): 101 of the
store's 124 data statements run unchanged on both once `?` becomes `%s`, SQLite keeps its 3 ms of imports
and its own speed, and the few SQLite-only constructs are named snippets here (`Dialect`).

- `connect(target)`: a path opens SQLite exactly as posture always has (a 0600 file, WAL, a busy timeout);
  a `postgresql://` URL opens psycopg, imported only then (`posture --version` never loads it).
- `Database.execute` / `executemany` take posture's `?` statements on both: on PostgreSQL they become `%s`
  (a literal `%` doubled), once per statement text. On SQLite they are sqlite3's own bound methods, so the
  SQLite path costs nothing more per statement than before.
- `Database.transaction`: one writer at a time, taken up front: `BEGIN IMMEDIATE` on SQLite, and on
  PostgreSQL `BEGIN` plus a transaction-scoped advisory lock, waited for at most POSTURE_DB_TIMEOUT (the
  connection's `lock_timeout`). Every failure becomes one of the same few lines on both.
- A URL's password is never printed: `Database.name` is the URL without it; use PGPASSFILE (~/.pgpass).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from scanner.errors import PostureError
from scanner.safefs import create_new, make_dirs

Target = Path | str  # a file, or a postgresql:// URL
URL_SCHEMES = ("postgresql://", "postgres://")
WRITER_LOCK = 0x706F7374757265  # "posture": the advisory lock every writing transaction takes on PostgreSQL
PASSWORD_HINT = "keep the password out of the URL: put it in PGPASSFILE (~/.pgpass by default)"  # noqa: S105


def is_url(target: Target | None) -> bool:
    """A PostgreSQL URL rather than a file name."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def shown_url(url: str) -> str:
    """The URL as messages may show it: without a password in its user part or its `password=` parameter."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def busy_timeout() -> float:
    """Seconds to wait for another run's write lock: `POSTURE_DB_TIMEOUT`, default 30."""
    try:
        return max(0.0, float(os.environ.get("POSTURE_DB_TIMEOUT") or 30))
    except ValueError:
        raise PostureError("POSTURE_DB_TIMEOUT is not a number", "give seconds, e.g. 30") from None


class Dialect:
    """SQLite's text for the few constructs the two stores spell differently (PostgreSQL's: below)."""

    name = "sqlite"
    least = "min"  # scalar min/max of two values
    greatest = "max"
    in_list = "IN (SELECT value FROM json_each(?))"  # `col {in_list}` with `list_param(values)` bound

    def not_in_ids(self, column: str) -> str:
        """`column` is none of the integer ids bound as `list_param(ids)`; fast however long the list."""
        return f"NOT ({column} {self.in_list})"  # SQLite makes the list an index once

    def list_param(self, values: Iterable[Any]) -> Any:
        return json.dumps(list(values))

    def shown_id(self, column: str) -> str:
        """A finding's id as people see it: F- and its number in hexadecimal."""
        return f"printf('F-%x', {column})"

    def age_days(self, column: str) -> str:
        """Whole days from the ISO day or time in `column` to the day bound as the one parameter."""
        return f"CAST(julianday(?) - julianday(substr({column}, 1, 10)) AS INTEGER)"

    def contains(self, text: str, part: str) -> str:
        """A truth value: `part` occurs in `text`."""
        return f"instr({text}, {part}) > 0"

    def truth(self, condition: str) -> str:
        """A condition as a value, 0 or 1 as SQLite gives it (PostgreSQL's is a boolean)."""
        return f"({condition})"

    def ddl(self, script: str) -> str:
        """A migration's DDL as this store wants it: SQLite's is the text posture has always run."""
        return script


class PostgresDialect(Dialect):
    name = "postgresql"
    least = "least"
    greatest = "greatest"
    in_list = "= ANY(?)"  # psycopg sends a Python list as an array

    def not_in_ids(self, column: str) -> str:
        # Neither `NOT (col = ANY(?))` nor `NOT (col IN (SELECT unnest(?)))`: the first compares each row with
        # every id, and so does the second once the ids outgrow work_mem (hashed below that): 4 s for 50,000
        # ids, unfinished after 10 min for 500,000. NOT EXISTS is an anti-join, hashed in batches at any size.
        # The element type is named, as an empty list has none.
        return f"NOT EXISTS (SELECT 1 FROM unnest(CAST(? AS bigint[])) AS listed(id) WHERE listed.id = {column})"

    _TYPES = ((re.compile(r"\bINTEGER PRIMARY KEY\b"), "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
              (re.compile(r"\bINTEGER\b"), "bigint"),  # SQLite's INTEGER is 64-bit; PostgreSQL's integer is not
              (re.compile(r"\bREAL\b"), "double precision"),
              # A btree entry holds at most 2,704 bytes: a unique JSON document is unique by its digest
              # (the ON CONFLICT target there: `PostgresDatabase._text`).
              (re.compile(r"\bjson TEXT NOT NULL UNIQUE\b"),
               "json TEXT NOT NULL, digest bytea GENERATED ALWAYS AS (posture_digest(json)) STORED UNIQUE"),
              )  # fmt: skip
    # convert_to is only STABLE (it could depend on the database's encoding, which is fixed at creation):
    # a generated column needs an IMMUTABLE function, and the UTF-8 bytes of a text are exactly that.
    _DIGEST = ("CREATE OR REPLACE FUNCTION posture_digest(text) RETURNS bytea IMMUTABLE STRICT PARALLEL SAFE "
               "LANGUAGE sql AS 'SELECT sha256(convert_to($1, ''UTF8''))';\n")

    def list_param(self, values: Iterable[Any]) -> Any:
        return list(values)

    def shown_id(self, column: str) -> str:
        return f"('F-' || to_hex({column}))"

    def age_days(self, column: str) -> str:
        return f"(CAST(? AS date) - CAST(substr({column}, 1, 10) AS date))"

    def contains(self, text: str, part: str) -> str:
        return f"strpos({text}, {part}) > 0"

    def truth(self, condition: str) -> str:
        return f"CAST(({condition}) AS integer)"

    def ddl(self, script: str) -> str:
        for pattern, replacement in self._TYPES:
            script = pattern.sub(replacement, script)
        return self._DIGEST + script if "posture_digest(" in script else script


class Database:
    """One open store. `execute`, `executemany` and `query` take `?` statements; `transaction` writes."""

    raw: Any  # the driver's connection (sqlite3 or psycopg)
    dialect: Dialect
    name: str  # what messages call it: the path, or the URL without its password
    readonly: bool
    Error: type[Exception]
    IntegrityError: type[Exception]
    OperationalError: type[Exception]
    execute: Callable[..., Any]  # (sql, params=()) -> a cursor: fetchone, fetchall, iteration, description
    executemany: Callable[..., Any]  # (sql, rows)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """A big read's rows, to be read to the end before anything else is asked on this connection (on
        PostgreSQL they arrive as the server sends them: see PostgresDatabase.stream)."""
        return iter(self.execute(sql, params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row, strict=True))

    def upsert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """`INSERT INTO table (columns) VALUES (...) ON CONFLICT ...` for many rows that are unique by the
        conflict target (one statement may not touch a row twice on PostgreSQL: the caller dedupes). Row by
        row here; on PostgreSQL in one statement over a staged copy (`PostgresDatabase.upsert_many`)."""
        self.executemany(sql, rows)

    @contextmanager
    def references_unchecked(self) -> Iterator[None]:
        """Inside a transaction, a part whose every reference is to a row read or written in it, under the
        writer lock, and which deletes nothing: PostgreSQL skips its per-row reference checks there where the
        role may (`PostgresDatabase._may_skip_references`). SQLite can switch its checks only outside a
        transaction, and they cost it little: nothing changes there."""
        yield

    def close(self) -> None:
        raise NotImplementedError

    @property
    def in_transaction(self) -> bool:
        raise NotImplementedError

    def user_version(self) -> int:
        """The inventory schema's version (0: a new store)."""
        raise NotImplementedError

    def set_user_version(self, version: int) -> None:
        raise NotImplementedError

    def error_kind(self, exc: Exception) -> str:
        """'full', 'busy', 'readonly' or 'other': what the user can do about it differs."""
        raise NotImplementedError

    def _begin(self, check_references: bool) -> None:
        raise NotImplementedError

    def _after(self, check_references: bool) -> None:
        """What a transaction's end must undo, committed or not."""

    def read_only_error(self) -> PostureError:
        return read_only_error(self.name)

    def write_error(self, exc: Exception) -> PostureError:
        """What went wrong mid-write, said so the user can act: full disk, lock held too long, or other."""
        kind = self.error_kind(exc)
        if kind == "full":
            return PostureError(f"the disk holding {self.name} is full: nothing of this run was written",
                                "free some space and run it again")  # fmt: skip
        if kind == "busy":
            return PostureError(
                f"the database {self.name} is busy: another posture run is writing to it",
                f"try again when it finishes (waited {busy_timeout():g} s; see POSTURE_DB_TIMEOUT)",
            )
        if kind == "readonly":
            return self.read_only_error()
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PostureError(f"could not write to {self.name}: {text}", "check the disk and the file")

    @contextmanager
    def transaction(self, check_references: bool = True) -> Iterator[Database]:
        """All or nothing: the writer lock is taken up front so two scans never interleave a chunk.

        `check_references=False` leaves SQLite's foreign-key checks off for this transaction only (SQLite
        can switch them only outside one), for a writer whose every reference is to a row it has just read or
        written in the same transaction and which deletes no row that others reference (so no cascade is
        missed): `posture evaluate` writes 1.5 million findings of 100,000 assets, and looking up each one's
        asset, evaluation and details row again cost about 40% of those writes. PostgreSQL does the same
        where the role may (`PostgresDatabase._may_skip_references`), else it checks."""
        try:
            try:
                self._begin(check_references)
            except self.Error as exc:
                self._rollback()
                raise self.write_error(exc) from exc
            try:
                yield self
            except self.OperationalError as exc:  # a full disk or a lock mid-write: one clear line
                self._rollback()
                raise self.write_error(exc) from exc
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self.execute("COMMIT")
                except self.Error as exc:
                    self._rollback()
                    raise self.write_error(exc) from exc
        finally:
            self._after(check_references)

    def _rollback(self) -> None:
        """The store may have rolled back already (SQLite on a full disk): a second ROLLBACK must not mask why."""
        if self.in_transaction:
            self.execute("ROLLBACK")


class SqliteDatabase(Database):
    Error = sqlite3.Error
    IntegrityError = sqlite3.IntegrityError
    OperationalError = sqlite3.OperationalError

    def __init__(self, conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
        self.raw = conn
        self.path = path
        self.name = str(path)
        self.readonly = readonly
        self.dialect = Dialect()
        self.execute = conn.execute  # sqlite3's own methods: nothing added per statement
        self.executemany = conn.executemany

    def close(self) -> None:
        self.raw.close()

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.in_transaction)

    def user_version(self) -> int:
        return int(self.raw.execute("PRAGMA user_version").fetchone()[0])

    def set_user_version(self, version: int) -> None:
        self.raw.execute(f"PRAGMA user_version = {int(version)}")

    def error_kind(self, exc: Exception) -> str:
        text = str(exc)
        if "full" in text or ("disk I/O" in text and _disk_full(self.path)):
            return "full"
        if "locked" in text or "busy" in text:
            return "busy"
        if "readonly" in text or "read-only" in text:
            return "readonly"
        return "other"

    def _begin(self, check_references: bool) -> None:
        if not check_references:
            self.raw.execute("PRAGMA foreign_keys = OFF")
        self.raw.execute("BEGIN IMMEDIATE")

    def _after(self, check_references: bool) -> None:
        if not check_references:
            self.raw.execute("PRAGMA foreign_keys = ON")


class PostgresDatabase(Database):
    """psycopg in autocommit mode: posture's own BEGIN/COMMIT delimit transactions, as on SQLite."""

    def __init__(self, conn: Any, url: str, readonly: bool) -> None:
        import psycopg

        self.Error = psycopg.Error
        self.IntegrityError = psycopg.IntegrityError
        self.OperationalError = psycopg.OperationalError
        self.raw = conn
        self.name = shown_url(url)
        self.readonly = readonly
        self.dialect = PostgresDialect()
        self._texts: dict[str, str] = {}
        self._copies: dict[str, str | None] = {}  # an executemany's statement -> its COPY, or None
        self._skip_references: bool | None = None  # `_may_skip_references`, once asked
        self._staged: dict[str, tuple[str, str, str, str]] = {}  # an upsert -> its statements (`upsert_many`)
        self.execute = self._execute
        self.executemany = self._executemany

    # A table of unique JSON documents is unique by their digest here (`PostgresDialect.ddl`): its upserts
    # name the digest as their target, the statements the same on both stores.
    _JSON_TARGET = re.compile(r"ON CONFLICT ?\(json\)")

    def _text(self, sql: str) -> str:
        text = self._texts.get(sql)
        if text is None:
            text = sql.replace("%", "%%").replace("?", "%s")
            text = self._texts[sql] = self._JSON_TARGET.sub("ON CONFLICT (digest)", text)
        return text

    def _execute(self, sql: str, params: Sequence[Any] | None = ()) -> Any:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(self._text(sql), params)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """Rows as the server sends them, 2,000 at a time (libpq's chunked rows), rather than a result held
        whole: a million software rows read in a third of the time, and never all in memory at once (a
        buffered result is libpq's copy plus Python's). Measured on this machine: 0.37 s and 38 MiB against
        1.27 s and 138 MiB for a million three-column rows. The connection is busy until the rows are read."""
        return self.raw.cursor().stream(self._text(sql) if params else sql, params or None, size=2000)  # type: ignore[no-any-return]

    # A plain multi-row INSERT (no conflict clause, nothing returned) goes as COPY: 2-3x faster than the
    # pipelined executemany (docs/store-port.md, "Bulk ingest"), the same rows and the same constraint checks.
    _PLAIN_INSERT = re.compile(r"INSERT INTO (\w+) ?(\([\w, ]+\))? VALUES \(\?(?:, ?\?)*\)")

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        copy_sql = self._copies.get(sql, "")
        if copy_sql == "":
            plain = self._PLAIN_INSERT.fullmatch(sql.strip())
            copy_sql = self._copies[sql] = f"COPY {plain[1]} {plain[2] or ''} FROM STDIN" if plain else None
        with self.raw.cursor() as cur:
            if copy_sql is None:
                cur.executemany(self._text(sql), rows)
                return
            with cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)

    # An upsert's parts: table, columns, VALUES items (each `?` or a constant), the rest (ON CONFLICT ...).
    _UPSERT = re.compile(r"\s*INSERT INTO (\w+) ?\(([\w,\s]+)\)\s*VALUES \(((?:'[^']*'|[^()'])*)\)\s*(ON CONFLICT.*)",
                         re.S)

    def upsert_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """The rows by COPY into a temporary table of the bound columns, then the upsert once over it: row by
        row (pipelined), each was a statement's worth of work, 1.3 s for the identities of 50,000 assets. The
        temporary table lasts until the transaction ends; each call empties it after use."""
        if not rows:
            return
        staged = self._staged.get(sql)
        if staged is None:
            parts = self._UPSERT.fullmatch(sql)
            if parts is None:
                raise ValueError(f"not an upsert of VALUES: {sql[:80]}")
            table, columns = parts[1], [c.strip() for c in parts[2].split(",")]
            items = [i.strip() for i in re.findall(r"'[^']*'|[^,\s][^,]*", parts[3])]
            if len(items) != len(columns):
                raise ValueError(f"the upsert's VALUES do not match its columns: {sql[:80]}")
            bound = [c for c, i in zip(columns, items, strict=True) if i == "?"]
            chosen = ", ".join(c if i == "?" else i for c, i in zip(columns, items, strict=True))
            stage = f"staged_{table}"
            staged = self._staged[sql] = (
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DROP AS SELECT {', '.join(bound)} FROM {table} "
                "WITH NO DATA",
                f"COPY {stage} FROM STDIN",
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT {chosen} FROM {stage} {parts[4]}",
                f"TRUNCATE {stage}",
            )
        create, copy_sql, insert, empty = staged
        with self.raw.cursor() as cur:
            cur.execute(create)
            with cur.copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(insert)
            cur.execute(empty)

    def close(self) -> None:
        self.raw.close()

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def user_version(self) -> int:
        if self.raw.execute("SELECT to_regclass('schema_stages')").fetchone()[0] is None:
            return 0
        row = self.raw.execute("SELECT version FROM schema_stages WHERE stage = 'inventory'").fetchone()
        return int(row[0]) if row else 0

    def set_user_version(self, version: int) -> None:
        self.raw.execute("CREATE TABLE IF NOT EXISTS schema_stages (stage TEXT PRIMARY KEY, version INTEGER)")
        self.raw.execute("INSERT INTO schema_stages (stage, version) VALUES ('inventory', %s) ON CONFLICT (stage) "
                         "DO UPDATE SET version = excluded.version", [version])  # fmt: skip

    def error_kind(self, exc: Exception) -> str:
        state = getattr(exc, "sqlstate", None) or ""
        if state == "53100":  # disk_full
            return "full"
        if state in ("55P03", "40P01", "40001"):  # lock_not_available (lock_timeout), deadlock, serialization
            return "busy"
        if state == "25006":  # read_only_sql_transaction
            return "readonly"
        return "other"

    def _begin(self, check_references: bool) -> None:
        self.raw.execute("BEGIN")
        self.raw.execute("SELECT pg_advisory_xact_lock(%s)", [WRITER_LOCK])
        if not check_references and self._may_skip_references():
            self.raw.execute("SET LOCAL session_replication_role = replica")

    @contextmanager
    def references_unchecked(self) -> Iterator[None]:
        if not self._may_skip_references():
            yield
            return
        self.raw.execute("SET LOCAL session_replication_role = replica")
        yield  # an error ends the transaction, and the setting with it
        self.raw.execute("SET LOCAL session_replication_role = origin")  # what follows (the queue's tables and
        # their triggers) as usual

    def _may_skip_references(self) -> bool:
        """Whether this role may leave the reference checks off for one transaction, as SQLite's writer does
        (`transaction(check_references=False)`). PostgreSQL checks each reference with a row lock on its
        target: 10 of the 23 s that 50,000 assets' first evaluation took (738,000 findings, three references
        each). `session_replication_role = replica` skips them, and every other trigger: posture has none
        of its own, and the queue's tables, which have procrastinate's, are written outside such a part
        (`references_unchecked`). It is set with SET LOCAL, so it ends with the transaction. Only a superuser,
        or a role granted it (`GRANT SET ON PARAMETER session_replication_role TO posture`), may set it; any
        other role keeps the checks and is merely slower. Asked once per connection."""
        if self._skip_references is None:
            row = self.raw.execute(  # the grant, and has_parameter_privilege, are PostgreSQL 15's
                "SELECT has_parameter_privilege('session_replication_role', 'SET')" if self.raw.info.server_version
                >= 150000 else "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()  # fmt: skip
            self._skip_references = bool(row and row[0])
        return self._skip_references


def store_error(exc: Exception) -> Exception:
    """A PostgreSQL error that reached the command line, as one line (its SQL state says which); any other
    exception as it is. psycopg is never imported here: the error's class is looked at by its module."""
    if not type(exc).__module__.startswith("psycopg") or isinstance(exc, PostureError):
        return exc
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    state = getattr(exc, "sqlstate", None) or "?"
    return PostureError(f"the PostgreSQL store refused a statement (SQL state {state}): {first[:300]}",
                        "its transaction wrote nothing; report it with the command you ran")  # fmt: skip


def read_only_error(name: str) -> PostureError:
    return PostureError(f"the database {name} is read-only", "give a writable --db path or fix its permissions")


def _disk_full(path: Path) -> bool:
    """Under 64 KiB free where the database lives (SQLite says "disk I/O error" when its -shm cannot grow)."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def sqlite_uri(path: Path) -> str:
    """A `file:` URI naming exactly this path: `?`, `#` and `%` in a name are quoted, never read as URI syntax.

    Why: `--db './inv?mode=memory'` spliced raw into a URI opened an in-memory database (an import that
    saved nothing and said it had), `a#b.db` wrote `a` and `100%41.db` wrote `100A.db`.
    """
    return "file:" + urllib.parse.quote(str(Path(path).absolute()))


def _read_only(path: Path) -> bool:
    """Writable by mode bits and on a writable filesystem? (root passes os.access, not a read-only mount.)"""
    if not path.exists():
        return False
    return not os.access(path, os.W_OK) or bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _create_private(path: Path) -> None:
    """Make a new database file with posture's mode (0600, or 0640 for the [files] group) before SQLite
    opens it: SQLite gives its -wal and -shm files the database file's mode and owner."""
    with suppress(FileExistsError):
        os.close(create_new(path))


def connect(target: Target, readonly: bool = False) -> Database:
    """Open a store (an SQLite file is made when writable and missing); failures are one line each."""
    if is_url(target):
        return _connect_postgres(str(target), readonly)
    return _connect_sqlite(Path(target), readonly)


def _connect_sqlite(path: Path, readonly: bool) -> SqliteDatabase:
    """Readers of a WAL database need to write its -shm file; on read-only media, read it as immutable."""
    if readonly and not path.exists():
        raise PostureError(f"no inventory at {path}", "run `posture scan` or `posture import` first, or give --db")
    try:
        if not readonly:
            make_dirs(path.parent)
            if _read_only(path) or _read_only(path.parent):
                raise read_only_error(str(path))
            _create_private(path)
        uri = sqlite_uri(path)
        if readonly:
            uri += "?immutable=1" if _read_only(path) or _read_only(path.parent) else "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=busy_timeout(), check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise PostureError(f"cannot open the database {path}: {exc}", "check the path and its permissions") from exc
    db = SqliteDatabase(conn, path, readonly)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA cache_size = -8000")  # 8 MB: index upkeep in big imports, bounded memory
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise open_error(db, exc) from exc
    return db


def open_error(db: Database, exc: Exception) -> PostureError:
    """A failure while opening or migrating, as one line."""
    text = str(exc)
    if isinstance(db, SqliteDatabase) and "not a database" in text:
        return PostureError(f"{db.name} is not an SQLite database", "give another --db path")
    kind = db.error_kind(exc)
    if kind == "readonly":
        return db.read_only_error()
    if kind == "full" or (isinstance(db, SqliteDatabase) and _disk_full(db.path)):
        return db.write_error(exc)
    if kind == "busy":
        return db.write_error(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return PostureError(f"cannot use the database {db.name}: {first}", "check the file and its folder"
                        if isinstance(db, SqliteDatabase) else "check the database and the role's rights")  # fmt: skip


def _cursor_class() -> Any:
    """psycopg's cursor with sqlite3's `lastrowid`: the id an INSERT just gave (the session's last identity
    value), asked only when read. New code says `RETURNING id`, which both stores have."""
    import psycopg

    class Cursor(psycopg.Cursor[Any]):
        @property
        def lastrowid(self) -> int | None:
            row = self.connection.execute("SELECT lastval()").fetchone()
            return int(row[0]) if row else None

    return Cursor


def _connect_postgres(url: str, readonly: bool) -> PostgresDatabase:
    """psycopg with posture's settings: autocommit (posture's own BEGIN), lock_timeout from POSTURE_DB_TIMEOUT
    (it bounds the writer lock's wait), read-only sessions for readers, every bool bound as 0/1 (SQLite's
    integers), and the C collation (text compared byte by byte as SQLite does: the short-name lookup's
    range and every ORDER BY on a name rely on it)."""
    shown = shown_url(url)
    try:
        import psycopg
        from psycopg.types.numeric import Int8Dumper
    except ImportError as exc:
        raise PostureError("psycopg is not installed: posture needs it for a postgresql:// --db",
                           "pip install 'psycopg[binary]'") from exc  # fmt: skip
    options = f"-c lock_timeout={int(busy_timeout() * 1000)}"
    if readonly:
        options += " -c default_transaction_read_only=on"
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, options=options,
                               application_name="posture")  # fmt: skip
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        if "@" in url.split("//", 1)[1].split("/", 1)[0]:
            secret = urllib.parse.urlsplit(url).password
            if secret:
                reason = reason.replace(secret, "***")
        raise PostureError(f"cannot open the database {shown}: {reason[:300]}",
                           f"check the URL and that the server runs; {PASSWORD_HINT}") from None  # fmt: skip
    conn.cursor_factory = _cursor_class()
    conn.adapters.register_dumper(bool, Int8Dumper)  # a bool as 0/1, as SQLite stores it (a bigint column
    # refuses a boolean)
    db = PostgresDatabase(conn, url, readonly)
    row = conn.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()").fetchone()
    collation = row[0] if row else ""
    if collation not in ("C", "POSIX"):
        conn.close()
        raise PostureError(f"the database {shown} sorts text by the locale {collation}: posture needs the C collation",
                           "create it with: CREATE DATABASE name LOCALE 'C' TEMPLATE template0")  # fmt: skip
    return db
