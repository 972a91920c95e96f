"""SQL that is quick on a test's inventory and quadratic on a council's, refused in posture's own source.

Two such statements were found by the 500,000-asset benchmark (bench/run.py scale), not by any test: on
PostgreSQL, `NOT (id = ANY(list))` compares every row with every listed id, and `NOT IN (SELECT ...)` does
the same once the subquery's rows outgrow work_mem (it is hashed below that, so 50,000 assets looked fine).
Together they kept the 500,000-asset evaluate from finishing. The fast forms are NOT EXISTS (an anti-join)
and, for a bound list of ids, `Dialect.not_in_ids`. This reads every SQL text in the packages (string
constants, f-strings with their holes shown as `{...}`) and names each file and line that negates a list
or a subquery another way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scanner", "rules", "reports", "posture")

# A negated membership test: NOT IN (SELECT ...), NOT (col = ANY(...)), col <> ALL(...), or NOT (col {x.in_list})
# (PostgreSQL's in_list is `= ANY(?)`).
NEGATED = re.compile(r"NOT\s+IN\s*\(\s*SELECT|NOT\s*\(\s*[\w.]+\s*(=\s*ANY\b|\{[^}]*in_list\})|<>\s*ALL\s*\(", re.I)
# Bounded lists, said why: the rule set's ids (a hundred or so, never one per asset or finding).
BOUNDED = re.compile(r"NOT\s*\(\s*(f\.)?rule_id\s*\{[^}]*in_list\}", re.I)


def sql_texts(path: Path) -> list[tuple[int, str]]:
    """Each string constant and f-string of a module (an f-string's holes as `{source}`), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    inside_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str)
                           else "{" + ast.unparse(v.value) + "}" if isinstance(v, ast.FormattedValue) else ""
                           for v in node.values)  # fmt: skip
            texts.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstrings:
            texts.append((node.lineno, node.value))
    return texts


def negated_lists(path: Path) -> list[str]:
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    return [f"{name}:{line}: {text.strip()[:100]}" for line, text in sql_texts(path)
            if NEGATED.search(text) and not BOUNDED.search(text)]  # fmt: skip


def test_no_statement_negates_an_unbounded_list_or_subquery() -> None:
    found = [hit for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
             for hit in negated_lists(path)]  # fmt: skip
    assert not found, "write NOT EXISTS, or Dialect.not_in_ids for bound ids:\n" + "\n".join(found)


def test_the_check_sees_each_form(tmp_path: Path) -> None:
    """Each quadratic form, as plain text, split over an f-string's holes and as posture wrote the two it had;
    and the forms that scale, which it leaves alone."""
    module = tmp_path / "m.py"
    module.write_text(
        'a = ("SELECT asset_id FROM observations WHERE scan_id = ? AND asset_id NOT IN "\n'
        '     "(SELECT asset_id FROM observations WHERE scan_id < ?)")\n'
        'b = f"DELETE FROM identified_assets WHERE NOT (asset_id {dialect.in_list})"\n'
        'c = "DELETE FROM t WHERE NOT (id = ANY(%s))"\n'
        'd = f"SELECT 1 FROM t WHERE id <> ALL({x})"\n'
        'e = f"SELECT 1 FROM t o WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.id = o.id) AND x {y}"\n'
        'f = f"DELETE FROM t WHERE {dialect.not_in_ids(\'t.id\')}"\n'
        'g = f"SELECT id FROM findings f WHERE NOT (f.rule_id {in_list})"\n'
    )
    assert [hit.split(":")[1] for hit in negated_lists(module)] == ["1", "3", "4", "5"]
