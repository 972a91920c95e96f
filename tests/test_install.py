"""posture installed like a tool: an sdist, a wheel built from it, the wheel installed with pip into a fresh
venv, and the console script run from a folder outside the source tree with no PYTHONPATH.

One build per module (slow: `lab` mark, the quick run skips it). The build copies the repository's tracked
files to a temporary folder, so nothing (build/, *.egg-info) lands in the working tree:
- the sdist comes from setuptools' own PEP 517 hook in this venv (it needs nothing else);
- the wheel is built from that sdist by `pip wheel`, as pip and pipx do, so a file the sdist lacks is missing
  from the wheel too. pip builds it in an isolated environment and takes setuptools from the package index
  pip is configured with (on the development machines a local mirror, so no network is used).
The fresh venv gets posture from the wheel alone (`pip install --no-index --no-deps`); its dependencies are
this venv's own installed packages, seen through a `.pth` file that lists a folder of links to them, with
posture's editable install and python-nmap (the bench extra) left out. `pip check` then proves the wheel's
declared dependencies are all met, and the commands prove posture runs without python-nmap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scanner", "rules", "reports", "posture")
# Not dependencies of posture: its own editable install in this venv, and python-nmap (the `bench` extra).
LEFT_OUT = ("__editable__", "posture_scanner", "nmap", "python_nmap")


def tracked_files(*folders: str) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", *folders], cwd=ROOT, capture_output=True, check=True)
    return [name for name in listed.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) of the working tree's tracked files."""
    base = tmp_path_factory.mktemp("build")
    source, dist = base / "src", base / "dist"
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    hook = "import sys\nfrom setuptools import build_meta\nprint(build_meta.build_sdist(sys.argv[1]))"
    made = subprocess.run([sys.executable, "-c", hook, str(dist)], cwd=source, capture_output=True, text=True,
                          timeout=300, check=False, env=clean_env(base))  # fmt: skip
    assert made.returncode == 0, made.stderr
    sdist = dist / made.stdout.split()[-1]
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(sdist)]
    wheel = subprocess.run(pip_wheel, cwd=base, capture_output=True, text=True, timeout=600, check=False,
                           env=clean_env(base))  # fmt: skip
    assert wheel.returncode == 0, wheel.stdout + wheel.stderr
    return sdist, next(dist.glob("posture_scanner-*.whl"))


def clean_env(home: Path, path: str = "") -> dict[str, str]:
    """No PYTHONPATH (the test run points it at the source tree), a home and XDG folders of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "POSTURE", "XDG_", "VIRTUAL_ENV"))}
    return {**env, "HOME": str(home), "PATH": f"{path}{os.pathsep if path else ''}/usr/local/bin:/usr/bin:/bin"}


@pytest.fixture(scope="module")
def venv(built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with posture installed from the wheel; returns its bin folder."""
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(where / "v")], check=True, timeout=300, env=clean_env(where))
    python = where / "v" / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    links = where / "deps"
    links.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(LEFT_OUT) and entry.suffix != ".pth" and entry.name != "__pycache__":
            (links / entry.name).symlink_to(entry)
    (site / "shared-deps.pth").write_text(f"{links}\n", encoding="utf-8")
    done = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-deps", str(built[1])],
                          capture_output=True, text=True, timeout=300, check=False, env=clean_env(where))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return where / "v" / "bin"


def test_wheel_holds_every_file_of_the_packages(built: tuple[Path, Path]) -> None:
    """Every tracked file under scanner/, rules/, reports/ (code, catalogue JSON, fingerprint and rule TOML,
    templates, JSON schemas, licences) is in the wheel, and in the sdist it was built from."""
    expected = set(tracked_files(*PACKAGES))
    data = {name for name in expected if not name.endswith(".py")}
    assert {"rules/data/evidence.toml", "rules/data/upgrade_paths.toml", "reports/templates/report.html.j2",
            "scanner/schemas/change.schema.json"} <= data  # fmt: skip
    assert any(name.startswith("rules/fingerprints/sysdescr/") for name in data)
    assert any(name.startswith("rules/data/eol/") and name.endswith(".json") for name in data)
    in_wheel = set(zipfile.ZipFile(built[1]).namelist())
    assert sorted(expected - in_wheel) == []
    with tarfile.open(built[0]) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        in_sdist = {name.removeprefix(f"{top}/") for name in sdist.getnames()}
    assert sorted(expected - in_sdist) == []
    assert {"pyproject.toml", "README.md", "LICENSE"} <= in_sdist


def test_wheel_metadata(built: tuple[Path, Path]) -> None:
    """python-nmap only with the bench extra; tomllib's backport only where tomllib is missing; the script."""
    wheel = zipfile.ZipFile(built[1])
    info = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    requires = [line.removeprefix("Requires-Dist: ") for line in wheel.read(info).decode().splitlines()
                if line.startswith("Requires-Dist: ")]  # fmt: skip
    assert [r for r in requires if "nmap" in r] == ['python-nmap>=0.7.1; extra == "bench"']
    assert [r for r in requires if r.startswith("tomli")] == ['tomli>=1.1; python_version < "3.11"']
    scripts = wheel.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "posture = scanner.cli:main" in scripts and "[posture.commands]" in scripts


def test_installed_posture_runs_outside_the_source_tree(venv: Path, tmp_path: Path) -> None:
    """The console script of the fresh venv, run from an empty folder: the version, the demo's help, the
    catalogue, the rule packs, the fingerprint database, from the installed package and nowhere else."""
    env = clean_env(tmp_path, str(venv))

    def posture(*args: str) -> str:
        result = subprocess.run([str(venv / "posture"), *args], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300, check=False)  # fmt: skip
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result.stdout

    assert posture("--version") == "posture, version 0.1.0\n"
    assert "demo" in posture("demo", "--help")
    assert "11 24H2 (W)" in posture("catalogue", "show", "windows")
    assert posture("rules", "list").strip()
    posture("fingerprints", "lint")
    where = subprocess.run([str(venv / "python"), "-c", "import nmap"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert where.returncode == 1  # python-nmap is not there, and posture did not need it
    found = subprocess.run([str(venv / "python"), "-c", "import scanner, rules, reports\n"
                            "print(scanner.__file__, rules.__file__, reports.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert all(Path(name).is_relative_to(venv.parent) for name in found), found
    check = subprocess.run([str(venv / "python"), "-m", "pip", "check"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert "posture-scanner" not in check.stdout, check.stdout


def test_installed_posture_reports_on_an_imported_estate(venv: Path, tmp_path: Path) -> None:
    """Import nmap XML, evaluate, write the HTML report and the remediation plan with the installed package:
    the KEV list, the lifecycle data, the packs, the evidence phrases, the upgrade paths and the template."""
    from tests.rules.estate import RDP, SMB1, WINDOWS_2008, Host, write_estate

    xml = write_estate(tmp_path / "scan.xml", [Host("10.0.0.5", "00:11:22:33:44:05", [RDP, SMB1], WINDOWS_2008)])
    env = clean_env(tmp_path, str(venv))
    db = tmp_path / "inventory.db"
    for args in (["import", "nmap", str(xml)], ["evaluate"], ["report", "--html", str(tmp_path / "r.html")],
                 ["plan", "remediation"]):  # fmt: skip
        result = subprocess.run([str(venv / "posture"), "--db", str(db), *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert result.returncode == 0, f"{args}: {result.stderr}"
    assert "Windows Server 2008" in (tmp_path / "r.html").read_text(encoding="utf-8")
