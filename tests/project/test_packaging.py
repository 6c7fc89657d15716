"""Packaging: inlet's wheel holds one import package, and inlet works when installed from it, outside the repository.

(a) The wheel's contents: the only top-level import name is ``inlet`` (``core``/``connectors``/``contracts`` reach
    it through the symlinks in ``inlet/``), the contract JSON Schemas are included, and so are the console
    script and both entry-point groups (connectors, pytest11).
(b) One fresh venv per module run, with the wheel installed non-editable (pinned by ``constraints.txt``),
    pytest, and the out-of-tree example package ``examples/plugin-package`` installed from a copy. Every
    command then runs from a temporary directory, so no file in the checkout can stand in for something the
    wheel forgot.

The wheel is built from a copy of the sources. A build in the checkout would leave ``build/`` and
``*.egg-info`` behind, and could race a concurrent build. pip may download from the package index (setuptools
for the builds, the pinned dependencies); once its cache is warm, the module takes well under two minutes.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test pays for the venv (cold pip cache)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "plugin-package"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
PLUGIN = "northwind_clinic.observations"
KEY = "northwind-clinic/observations"
_CACHES = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")
_PACKAGE_LEFTOVERS = shutil.ignore_patterns(
    "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "build", "*.egg-info", "var"
)  # what running or installing it in place leaves


def _run(
    args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    """stdout of a command that must succeed (the assertion shows both streams)."""
    assert result.returncode == 0, f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """inlet's wheel, built with ``pip wheel --no-deps`` from a copy of what the build reads."""
    src = tmp_path_factory.mktemp("inlet-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("inlet", "core", "connectors", "contracts"):  # inlet/ keeps its symlinks to the other three
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=_CACHES)
    dist = tmp_path_factory.mktemp("dist")
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, "."], cwd=src, timeout=300))
    [built] = dist.glob("inlet-*.whl")
    return built


def test_the_wheel_holds_one_import_package_with_its_schemas_and_entry_points(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        dist_info = f"inlet-{VERSION}.dist-info"
        entry_points = configparser.ConfigParser()
        entry_points.read_string(whl.read(f"{dist_info}/entry_points.txt").decode())
    assert {n.split("/")[0] for n in names} == {"inlet", dist_info}
    assert {
        "inlet/core/cli.py",
        "inlet/connectors/fhir/search.py",
        "inlet/contracts/__init__.py",
        "inlet/pytest_plugin.py",
        "inlet/testing.py",
    } <= set(names)
    schemas = sorted(p.name for p in (ROOT / "contracts" / "schemas").glob("*.json"))
    packed = sorted(
        n.removeprefix("inlet/contracts/schemas/")
        for n in names
        if re.fullmatch(r"inlet/contracts/schemas/[^/]+\.json", n)
    )
    assert schemas and packed == schemas
    assert dict(entry_points["console_scripts"]) == {"inlet": "inlet.core.cli:main"}
    assert dict(entry_points["pytest11"]) == {"inlet": "inlet.pytest_plugin"}
    connectors = dict(entry_points["inlet.connectors"])
    assert connectors and all(target.startswith("inlet.connectors.") for target in connectors.values())


@dataclass(frozen=True)
class Venv:
    """The fresh venv with inlet installed from its wheel, and an environment that knows nothing of the checkout."""

    path: Path
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def inlet(self) -> Path:
        return self.path / "bin" / "inlet"


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment minus whatever could point a command at the checkout, Kafka or another config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INLET_", "PYTEST_", "PYTHON")) and k not in ("VIRTUAL_ENV", "COV_CORE_SOURCE")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """ONE fresh venv: the wheel (not editable), pytest and the example plugin package, pinned by constraints.txt."""
    path = tmp_path_factory.mktemp("venv")
    _ok(_run([sys.executable, "-m", "venv", path], cwd=path, timeout=120))
    package = tmp_path_factory.mktemp("plugin-package-src")
    shutil.copytree(PACKAGE, package, dirs_exist_ok=True, ignore=_PACKAGE_LEFTOVERS)
    env = _clean_env(path)
    # One resolver run: the package's `inlet` requirement is met by the wheel, never looked up in an index.
    _ok(
        _run(
            [
                path / "bin" / "python",
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-c",
                ROOT / "constraints.txt",
                wheel,
                "pytest",
                package,
            ],
            cwd=path,
            env=env,
            timeout=600,
        )
    )
    return Venv(path, env)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """An empty working directory outside the repository."""
    work = tmp_path / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(ROOT.resolve())
    return work


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A checkout of the plugin package as its author would have it (the installed copy is elsewhere)."""
    copy = tmp_path / "plugin-package"
    shutil.copytree(PACKAGE, copy, ignore=_PACKAGE_LEFTOVERS)
    return copy


def test_only_inlet_is_importable_and_it_is_the_installed_wheel(venv: Venv, outside: Path) -> None:
    assert _ok(_run([venv.inlet, "--version"], cwd=outside, env=venv.env)).strip() == f"inlet {VERSION}"
    probe = (
        "import importlib, json\n"
        "found = {}\n"
        "for name in ('core', 'connectors', 'contracts'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "        found[name] = 'imported'\n"
        "    except ModuleNotFoundError:\n"
        "        found[name] = 'missing'\n"
        "import inlet.core.cli, inlet.connectors.fhir.search, inlet.contracts\n"
        "found['inlet'] = inlet.__file__\n"
        "print(json.dumps(found))\n"
    )
    found = orjson.loads(_ok(_run([venv.python, "-c", probe], cwd=outside, env=venv.env)))
    assert {k: found[k] for k in ("core", "connectors", "contracts")} == dict.fromkeys(
        ("core", "connectors", "contracts"), "missing"
    )
    assert Path(found["inlet"]).is_relative_to(venv.path)  # not editable: the code lives in the venv


class Summary(NamedTuple):
    """One integration's row in ``inlet run``'s summary table."""

    read: int
    events: int
    dlq: int
    filtered: int
    drift: int
    restarts: int
    balanced: str


_ROW = re.compile(r"│\s*(?P<key>[\w.-]+/[\w.-]+)\s*│" + r"\s*(\d+)\s*│" * 6 + r"\s*(\w+)\s*│")


def _ran(output: str, key: str) -> Summary:
    """The summary row of ``key``, asserted to show events and balanced books (read = mapped + DLQ + filtered;
    a mapped record may give several events, e.g. one per dual-published major)."""
    rows = {m["key"]: Summary._make([*map(int, m.groups()[1:7]), m.groups()[7]]) for m in _ROW.finditer(output)}
    assert key in rows, f"no summary row for {key} in:\n{output}"
    row = rows[key]
    assert row.balanced == "yes" and row.events >= row.read - row.dlq - row.filtered > 0, row
    return row


def test_the_bundled_example_runs_from_the_wheel(venv: Venv, outside: Path) -> None:
    # The example's config and the recording it replays, laid out as in the repository (relative paths hold).
    shutil.copytree(ROOT / "examples" / "config", outside / "examples" / "config")
    fixtures = Path("fixtures") / "example-clinic" / "observations"
    shutil.copytree(ROOT / fixtures, outside / fixtures)
    env = {**venv.env, "INLET_STATE_DIR": str(outside / "state")}
    result = _run([venv.inlet, "run", "--config", "examples/config", "--once"], cwd=outside, env=env)
    _ran(_ok(result), "example-clinic/observations")
    assert (outside / "state" / "outbox.sqlite").is_file()


def test_inlet_plugins_names_the_out_of_tree_plugin_with_its_distribution(venv: Venv, outside: Path) -> None:
    rows = [
        orjson.loads(line)
        for line in _ok(_run([venv.inlet, "plugins", "--json"], cwd=outside, env=venv.env)).splitlines()
    ]
    [row] = [r for r in rows if r["name"] == PLUGIN]
    assert (row["family"], row["distribution"], row["version"]) == ("fhir", "inlet-northwind-clinic", "0.1.0")
    [contract] = row["contracts"]
    assert contract.startswith("clinical.observation ")
    assert {r["distribution"] for r in rows if r["name"] != PLUGIN} == {"inlet"}
    table = _ok(_run([venv.inlet, "plugins"], cwd=outside, env=venv.env))
    assert re.search(rf"{re.escape(PLUGIN)}\s*│\s*fhir\s*│\s*inlet-northwind-clinic 0\.1\.0", table), table


def _fixture_keys(package: Path) -> list[str]:
    root = package / "fixtures"
    return sorted(
        f"{d.parent.name}/{d.name}"
        for d in root.glob("*/*")
        if (d / "http.jsonl").exists() or (d / "mqtt.jsonl").exists()
    )


def test_the_package_pytest_runs_one_generated_test_per_fixture_dir_and_its_unit_test(
    venv: Venv, package_copy: Path
) -> None:
    result = _run([venv.python, "-m", "pytest", "-v", "-p", "no:cacheprovider"], cwd=package_copy, env=venv.env)
    output = _ok(result)
    passed = re.findall(r"^(\S+::\S+) PASSED", output, re.MULTILINE)
    generated = sorted(
        node.removeprefix("config/inlet.yaml::") for node in passed if node.startswith("config/inlet.yaml::")
    )
    unit = [node for node in passed if node.startswith("tests/")]
    assert generated == _fixture_keys(package_copy) == [KEY]
    assert len(unit) == 1
    assert re.search(rf"\b{len(generated) + len(unit)} passed\b", output), output
    assert "inlet: contract tests for config from fixtures" in output  # the plugin's report header


def test_an_edited_fixture_fails_the_package_pytest_with_the_diff_and_the_update_hint(
    venv: Venv, package_copy: Path
) -> None:
    # The upstream "changed": the first recorded resource's value is not what the goldens were made from.
    http = package_copy / "fixtures" / KEY / "http.jsonl"
    lines = http.read_bytes().splitlines()
    first = orjson.loads(lines[0])
    resource = next(e["resource"] for e in first["response"]["json"]["entry"] if "valueQuantity" in e["resource"])
    old, new = resource["valueQuantity"]["value"], 4242.5
    resource["valueQuantity"]["value"] = new
    lines[0] = orjson.dumps(first)
    http.write_bytes(b"\n".join(lines) + b"\n")

    result = _run([venv.python, "-m", "pytest", "-p", "no:cacheprovider"], cwd=package_copy, env=venv.env)
    output = result.stdout
    assert result.returncode == 1, output + result.stderr
    assert re.search(r"\b1 failed, 1 passed\b", output), output
    assert f"FAILED config/inlet.yaml::{KEY}" in output
    assert "no longer gives the golden events" in output
    hint = f"inlet replay {KEY} --update --config config"  # fixtures/ is where the CLI looks by default
    assert f"`{hint}`" in output
    assert "+++ replayed" in output and f'"value":{old}' in output and f'"value":{new}' in output
    assert "Traceback" not in output and "inlet/testing.py" not in output  # the message, not a traceback

    # The hint is the whole fix once the change is reviewed.
    _ok(_run([venv.inlet, *hint.split()[1:]], cwd=package_copy, env=venv.env))
    _ok(_run([venv.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=package_copy, env=venv.env))


def test_the_out_of_tree_plugin_runs_under_the_supervisor(venv: Venv, package_copy: Path) -> None:
    result = _run([venv.inlet, "run", "--config", "config", "--once"], cwd=package_copy, env=venv.env)
    summary = _ran(_ok(result), KEY)
    tail = _ok(_run([venv.inlet, "events", "tail", "--config", "config", "-n", "1000"], cwd=package_copy, env=venv.env))
    records = [orjson.loads(line) for line in tail.splitlines()]  # events and DLQ records
    assert len(records) == summary.events + summary.dlq
    assert {r["headers"]["ce_customer"] for r in records} == {"northwind-clinic"}
    # The plugin's quirk ran in the supervisor: a point-of-care code got its LOINC coding first.
    codes = [r["value"]["code"] for r in records if r["topic"] == "clinical.observation.v1"]
    poc = [c for c in codes if any(coding["system"] == "urn:northwind-clinic:poc" for coding in c)]
    assert poc and any(c[0]["system"] == "http://loinc.org" for c in poc), poc
