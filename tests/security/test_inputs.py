"""Issue 11 (hardening), user-supplied input files: the asset register (CSV), the cost table (TOML or CSV)
and the config file (TOML).

Each hostile file of the issue is rerun as described, through the real `posture` command: it is refused
in one line naming the file and line (exit 2, no traceback) and nothing is imported. A hypothesis fuzz
test per parser then checks that arbitrary input ends as that parser's refusal (`PostureError`, which the
CLI turns into exit 2) and never as any other exception.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules.cli  # noqa: F401 - registers the [rules] check with scanner.config, as `posture` does at start
from reports.procurement import load_costs
from scanner.config import read_config
from scanner.errors import PostureError
from scanner.importers import read_register
from tests.conftest import assets_json, db_fingerprint, run_posture
from tests.scanner.test_bad_input import assert_one_error_line

# ---- the asset register ------------------------------------------------------------------------------


@pytest.fixture
def register_db(store_db: Path | str, tmp_path: Path) -> Path | str:
    """An inventory holding one asset from a good register, so a refused import has something to lose."""
    db = store_db
    good = tmp_path / "good.csv"
    good.write_text("address,hostname,owner\n127.94.0.1,lib-pc01,Libraries\n", encoding="utf-8")
    assert run_posture("import", "assets", str(good), db=db).returncode == 0
    return db


REGISTER_ATTACKS = [
    pytest.param(
        b"address,owner\n127.94.0.2,Revenues\n127.94.0.3," + b"x" * (128 * 1024 + 1) + b"\n",
        ("register.csv:3:", "a cell is longer than 131,072 characters"),
        id="cell-over-128KiB",
    ),
    pytest.param(  # the old reader made 127.94.0.2's owner 'Revenues\n127.94.0.3,Digital' and lost .3
        b'address,owner\n127.94.0.2,"Revenues\n127.94.0.3,Digital"\n127.94.0.4,Facilities\n',
        ("register.csv:2:", "a quoted cell runs on past the end of its line"),
        id="unterminated-quote-swallows-next-row",
    ),
    pytest.param(
        b'address,owner\n127.94.0.2,Revenues\n127.94.0.3,"Digital\n127.94.0.4,Facilities\n',
        ("register.csv:3:", "a quote is not closed before the end of the file"),
        id="unterminated-quote-to-end",
    ),
    pytest.param(  # the old reader silently demoted the second address column to an attribute
        b"address,owner,IP Address\n127.94.0.2,Revenues,127.94.0.9\n",
        ("register.csv:1:", "columns 1 ('address') and 3 ('IP Address') both hold the address"),
        id="second-address-column",
    ),
    pytest.param(  # 0x81 is not a character in Windows-1252 either
        b"address,owner\n127.94.0.2,Caf\xc3\xa9\n127.94.0.3,\x81\x8d\n",
        ("register.csv:3:", "neither UTF-8 nor Windows-1252"),
        id="neither-encoding",
    ),
]


@pytest.mark.parametrize(("content", "needles"), REGISTER_ATTACKS)
def test_register_refuses_malformed_file(
    register_db: Path | str, tmp_path: Path, content: bytes, needles: tuple[str, ...]
) -> None:
    """Issue 11, Low: "Register CSV: a cell over 128 KiB (traceback); an unterminated quote swallows the next
    row into the owner field; a second `address` column silently demoted"."""
    before = db_fingerprint(register_db)
    register = tmp_path / "register.csv"
    register.write_bytes(content)
    result = run_posture("import", "assets", str(register), db=register_db)
    assert_one_error_line(result, 2, *needles)
    assert db_fingerprint(register_db) == before  # atomic: not one row of the file was imported


def test_register_mixed_utf8_and_cp1252(store_db: Path | str, tmp_path: Path) -> None:
    """Issue 11, Low: "Register CSV: ... mixed UTF-8 and cp1252 turns UTF-8 rows to mojibake". Each line is
    decoded on its own: UTF-8 first, Windows-1252 for a line that is not UTF-8."""
    db = store_db
    register = tmp_path / "register.csv"
    register.write_bytes(
        b"\xef\xbb\xbfhostname,owner,site\n"
        b"pc-utf8,Caf\xc3\xa9 Team,Town Hall\n"  # UTF-8, as a later export saved it
        b"pc-1252,Caf\xe9 Team,Stra\xdfe 5\n"  # Windows-1252, pasted from an older export
    )
    result = run_posture("import", "assets", str(register), db=db)
    assert result.returncode == 0, result.stderr
    owners = {a["hostnames"][0]: (a["owner"], a["site"]) for a in assets_json(db)}
    assert owners == {"pc-utf8": ("Café Team", "Town Hall"), "pc-1252": ("Café Team", "Straße 5")}


# ---- the cost table ----------------------------------------------------------------------------------

COST_ATTACKS = [
    pytest.param("costs.toml", "products = 5\n", ("costs.toml:1:", "products must be tables"), id="products-5"),
    pytest.param(
        "costs.toml", 'currency = "GBP"\nproducts = "abc"\n', ("costs.toml:2:", "products must be tables"),
        id="products-abc",
    ),
    pytest.param(
        "costs.toml", "products = " + "[" * 5000 + "]" * 5000 + "\n", ("costs.toml", "nested too deeply"),
        id="deep-nesting",
    ),
    pytest.param(
        "costs.csv", "product,option,unit_price\nwindows-server,replace," + "9" * 131_073 + "\n",
        ("costs.csv:2:", "a cell is longer than 131,072 characters"), id="huge-csv-cell",
    ),
    pytest.param(
        "costs.toml", 'currency = "' + "G" * (2 << 20) + '"\n', ("costs.toml", "over the 1 MiB limit"),
        id="huge-toml-cell",
    ),
    pytest.param(
        "costs.toml", "[products.windows-server]\nupgrade = 1200\nreplace = true\n",
        ("costs.toml:3:", "[products.windows-server] replace: True is not a price"), id="price-true",
    ),
]  # fmt: skip


@pytest.fixture
def evaluated_db(register_db: Path | str, tmp_path: Path) -> Path | str:
    """An evaluated inventory, on which a good cost table gives a plan."""
    assert run_posture("evaluate", db=register_db).returncode == 0
    good = tmp_path / "good.toml"
    good.write_text("[default]\nreplace = 2000\n[products.windows-server]\nupgrade = 1200\n", encoding="utf-8")
    assert run_posture("plan", "procurement", "--costs", str(good), db=register_db).returncode == 0
    return register_db


@pytest.mark.parametrize(("name", "content", "needles"), COST_ATTACKS)
def test_cost_table_refused(
    evaluated_db: Path | str, tmp_path: Path, name: str, content: str, needles: tuple[str, ...]
) -> None:
    """Issue 11, Low: "Cost tables: `products = 5`, `products = "abc"`, deep nesting, a huge cell"."""
    costs = tmp_path / name
    costs.write_text(content, encoding="utf-8")
    result = run_posture("plan", "procurement", "--costs", str(costs), db=evaluated_db)
    assert_one_error_line(result, 2, *needles)


# ---- the config file ---------------------------------------------------------------------------------

JOB = '[jobs.x]\ntargets = ["127.94.0.1"]\nports = "9"\n'
CONFIG_ATTACKS = [
    pytest.param(JOB + "deep = " + "[" * 5000 + "]" * 5000 + "\n", ("config.toml", "nested too deeply"), id="deep"),
    pytest.param(JOB + 'on_change = "notify \\"x"\n', ("config.toml:4:", "jobs.x: on_change is not a valid command"),
                 id="on_change-unbalanced-quote"),
    pytest.param(JOB + "[rules]\nstale_days = 30\nsla_days = 5\n",
                 ("config.toml:6:", "[rules] sla_days must be a table"), id="sla_days-5"),
    pytest.param(JOB + '[rules]\nsla_days = "abc"\n', ("config.toml:5:", "[rules] sla_days must be a table"),
                 id="sla_days-abc"),
    pytest.param("rules = 5\n" + JOB, ("config.toml:1:", "rules must be a table"), id="rules-5"),
    pytest.param(JOB + 'schedule = "0 0 31 2 *"\n', ("config.toml:4:", "not a cron expression that comes round"),
                 id="schedule-never"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "needles"), CONFIG_ATTACKS)
def test_config_refused_alike_by_check_and_run(
    register_db: Path | str, tmp_path: Path, content: str, needles: tuple[str, ...]
) -> None:
    """Issue 11, Low: "Config: deep nesting, an unbalanced quote in `on_change`, `sla_days = 5` or `"abc"`,
    `rules = 5` (3 of these pass `config check`)". One validation, at load: `config check`, `run` and
    `evaluate` refuse the file with the same line, before anything runs."""
    config = tmp_path / "config.toml"
    config.write_text(content, encoding="utf-8")
    before = db_fingerprint(register_db)
    lines = {
        assert_one_error_line(run_posture("--config", str(config), *command, db=register_db), 2, *needles)
        for command in (("config", "check"), ("run", "x"), ("evaluate",))
    }
    assert len(lines) == 1, lines
    assert db_fingerprint(register_db) == before  # the job's scan never started


# ---- fuzzing: each parser refuses, never crashes -----------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CSV_PIECES = [b"address", b"hostname", b"owner", b"IP address", b"product", b"option", b"unit_price", b"replace",
              b"windows-server", b"127.94.0.1", b"10.0.0.0", b"pc1", b"4500", b"-1", b"nan", b"1e400", b",", b";",
              b"\t", b"|", b'"', b"'", b'""', b"\n", b"\r", b"\r\n", b"\x00", b"\xc3\xa9", b"\xe9", b"\x81",
              b"\xff\xfe", b"\xef\xbb\xbf", b" ", b"x" * 300]  # fmt: skip
csv_bytes = st.one_of(st.binary(max_size=3000), st.lists(st.sampled_from(CSV_PIECES), max_size=80).map(b"".join))


def _refused_or_read(path: Path, content: bytes, parse: Callable[[Path], object]) -> None:
    """Write `content` to `path` and parse it: a result or the parser's own refusal, nothing else."""
    path.write_bytes(content)
    with contextlib.suppress(PostureError):
        parse(path)


@FUZZ
@given(csv_bytes)
def test_fuzz_register(content: bytes) -> None:
    """Issue 11, Build: "Every parser of outside data ... turns any failure into a refusal of that one input"
    (the register)."""
    with tempfile.TemporaryDirectory() as folder:
        _refused_or_read(Path(folder) / "register.csv", content, read_register)


def toml_text(headers: list[str], keys: list[str], values: list[str]) -> st.SearchStrategy[str]:
    """TOML-ish text from the pieces a parser meets (tables, keys, values of every type), or any text."""
    line = st.one_of(
        st.sampled_from(headers),
        st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(keys), st.sampled_from(values)),
    )
    return st.one_of(st.text(max_size=500), st.lists(line, max_size=25).map("\n".join))


VALUES = ["5", "0", "-1", '"abc"', '""', "true", "1.5", "nan", "inf", "1e400", "9" * 30, "[1, 2]", "[]", "{a = 1}",
          "{replace = 4}", '"4500"', "1979-05-27", "07:32:00", "1979-05-27T07:32:00Z", '"\\u0000"', '"\\u001b[31m"',
          '"', "[[[[1]]]]", "[" * 400 + "]" * 400, '["10.0.0.0/24"]', '["127.94.0.1-9"]', '["-x"]', '["a;b"]',
          '["nmap", "snmp"]', '"30 2 * * 1-5"', '"0 0 31 2 *"', '"* * * * * *"', '"notify \\"x"', '"a \'b"',
          '"22,80"', '"99999"', '"/tmp/x"', "{ high = 30 }", "{ high = 0 }", "{ urgent = 3 }",
          "{ high = 1e3 }"]  # fmt: skip


@FUZZ
@given(
    toml_text(
        ["[products.windows-server]", "[products.default]", "[default]", "[products]", "[[products]]",
         '[products."Windows Server"]', "[products.a.b]", ""],
        ["products", "default", "currency", "horizon_years", "replace", "upgrade", "esu_per_year", "retire", "x"],
        VALUES,
    ),
    csv_bytes,
)  # fmt: skip
def test_fuzz_cost_table(toml: str, content: bytes) -> None:
    """Issue 11, Build: "Every parser of outside data ... turns any failure into a refusal" (cost tables)."""
    with tempfile.TemporaryDirectory() as folder:
        _refused_or_read(Path(folder) / "costs.toml", toml.encode("utf-8", "surrogatepass"), load_costs)
        _refused_or_read(Path(folder) / "costs.csv", content, load_costs)


@FUZZ
@given(
    toml_text(
        ["[scan]", "[log]", "[rules]", "[rules.sla_days]", "[jobs.a]", "[jobs.b]", "[jobs]", "[[jobs]]",
         '[jobs."A b"]', "[other]", ""],
        ["scope", "file", "sla_days", "horizon_months", "horizon_days", "stale_days", "dirs", "targets", "exclude",
         "schedule", "on_change", "ports", "max_rate", "methods", "creds", "inbox", "report", "dns",
         "allow_overlap", "high", "rules", "jobs", "scan"],
        VALUES,
    )
)  # fmt: skip
def test_fuzz_config(text: str) -> None:
    """Issue 11, Build: "Every parser of outside data ... turns any failure into a refusal" (the config)."""
    with tempfile.TemporaryDirectory() as folder:
        _refused_or_read(Path(folder) / "config.toml", text.encode("utf-8", "surrogatepass"), read_config)
