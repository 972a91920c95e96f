"""The packages import one way: posture (the application layer) → reports → rules → scanner. A stage that
imported a later one would make it a library of its own callers (a scanner that needs the report
templates to scan); only `posture` knows all three (README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDER = ("scanner", "rules", "reports", "posture")


def imported_packages(path: Path) -> set[str]:
    """The top-level names a module imports, wherever the import is (lazy imports inside functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ORDER)
def test_a_package_imports_no_later_one(package: str) -> None:
    later = set(ORDER[ORDER.index(package) + 1 :])
    wrong = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & later)
             for path in sorted((ROOT / package).rglob("*.py"))}  # fmt: skip
    assert not {k: v for k, v in wrong.items() if v}, wrong


def test_the_finder_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f() -> None:\n    from reports.stage import write_report\n    import rules.cli\n")
    assert imported_packages(module) == {"reports", "rules"}
