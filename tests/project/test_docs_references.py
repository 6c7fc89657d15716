"""The repository stands on its own: what its files cite is in the repository, and the docs name what exists.

- No file a commit would hold cites a document that is not in the repository (design notes), an issue number
  or a path on someone's machine; the explanation belongs in ``docs/``.
- Every repository path that ``README.md`` or a page of ``docs/`` names in backticks exists (a tutorial may
  name the files it makes).
- ``docs/reference/environment.md`` lists exactly the ``INLET_*`` variables something reads, in the right
  section: read by inlet itself, or only by the tests, tools and deployment files.
- The Python blocks of the READMEs compile, and what they import from ``inlet`` exists.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests.project.test_tutorials import blocks

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ENV_PAGE = DOCS / "reference" / "environment.md"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
READMES = [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "examples" / "plugin-package" / "README.md"]

OUTSIDE_CITES = {
    "a design note outside the repository": re.compile(r"\b(?:DESIGN|STYLE|RECIPES)\.md\b"),
    "an issue number": re.compile(r"\b[Ii]ssues? #?[0-9]+\b"),
    "a path on someone's machine": re.compile(r"(?<![\w.~-])/(?:work|home|root)/"),
}
REPO_PREFIXES = (
    "core/",
    "connectors/",
    "contracts/",
    "tests/",
    "tools/",
    "bench/",
    "docs/",
    "scripts/",
    "examples/",
    "fixtures/",
    "inlet/",
)
SHIPPED = ("core/", "connectors/", "contracts/", "inlet/")
"""Where the installed package comes from: a variable read here is read by inlet itself."""
_NAME = re.compile(r"\bINLET_[A-Z0-9_]*[A-Z0-9]\b")
_QUOTED_NAME = re.compile(r"""["'](INLET_[A-Z0-9_]*[A-Z0-9])["']""")
_FENCE = re.compile(r"^([ ]*)(`{3,}|~{3,})[^\n]*\n.*?^\1\2[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_PLACEHOLDER = re.compile(r"[<>{}$]|\.\.\.|(?:^|/)[A-Z_]{3,}(?:/|$)")


@cache
def repository_files() -> tuple[str, ...]:
    """The files a commit of the working tree would hold (as the tutorials' scratch copy), that exist."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return tuple(name for name in listed.split("\0") if name and (ROOT / name).is_file())


def text_of(name: str) -> str | None:
    """The file as text; None for a binary file."""
    data = (ROOT / name).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# --- (a) nothing cites what is not in the repository ---------------------------------------------------------


def test_no_file_cites_what_is_outside_the_repository() -> None:
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    found = []
    for name in repository_files():
        if name == this or name.startswith("fixtures/"):  # recorded upstream data cites nothing of ours
            continue
        text = text_of(name)
        if text is None:
            continue
        for what, pattern in OUTSIDE_CITES.items():
            for m in pattern.finditer(text):
                found.append(f"{name}:{_line(text, m.start())}: {what}: {m[0]!r}")
    assert not found, "cite docs/ instead, or say it in the file itself:\n" + "\n".join(found)


def test_the_outside_cite_patterns_catch_what_they_are_for() -> None:
    caught = [
        "see DESIGN.md",
        "(issue 17)",
        "issue #9",
        "Issues 3",
        "in /home/ann/x",
        "/work/main/core",
        "/root/.cache",
    ]
    passed = ["DLQ_TRUNCATED_BYTES", '"issue": [', "issues", "~/.cache/inlet", "/srv/feeds", "a/work/b"]
    assert all(any(p.search(t) for p in OUTSIDE_CITES.values()) for t in caught)
    assert not any(p.search(t) for p in OUTSIDE_CITES.values() for t in passed)


# --- (b) the paths the docs name exist ---------------------------------------------------------------------


def cited_paths(markdown: str) -> list[tuple[int, str]]:
    """Repository paths a page names in inline code, with their line: ``core/http.py``, ``tests/*.py``."""
    text = _FENCE.sub(lambda m: "\n" * m[0].count("\n"), markdown)
    out = []
    for m in _CODE_SPAN.finditer(text):
        for token in m[2].split():
            path = re.sub(r":[0-9]+$", "", token.strip("\"'`,;:()[]"))
            if path.startswith(REPO_PREFIXES) and not _PLACEHOLDER.search(path):
                out.append((_line(text, m.start()), path.split("::")[0]))
    return out


def _exists(path: str) -> bool:
    if "*" in path:
        return any(ROOT.glob(path.rstrip("/")))
    target = ROOT / path
    return target.exists() or target.is_symlink()


def test_every_path_the_docs_name_exists() -> None:
    missing = []
    for page in PAGES:
        # A tutorial names the files it makes; they are in its blocks (a title, a command, its output).
        made = "\n".join(b.body + " " + b.options.get("title", "") for b in blocks(page))
        for line, path in cited_paths(page.read_text(encoding="utf-8")):
            if not _exists(path) and not (page.parent.name == "tutorials" and path.rstrip("/") in made):
                missing.append(f"{page.relative_to(ROOT)}:{line}: {path}")
    assert not missing, "these paths do not exist:\n" + "\n".join(missing)


def test_the_path_finder_reads_code_spans_only() -> None:
    page = "See `core/http.py`, `scripts/test tests/core -x`, `fixtures/<customer>/` and `inlet/core/...`.\n"
    page += "```text\ncore/not_checked.py\n```\n`tests/*.py` and `fixtures/CUSTOMER/INTEGRATION`\n"
    assert cited_paths(page) == [(1, "core/http.py"), (1, "scripts/test"), (1, "tests/core"), (5, "tests/*.py")]


# --- environment variables ---------------------------------------------------------------------------------


def _sources() -> dict[str, str]:
    """Every file but the docs, as text: what could read a variable."""
    out = {}
    for name in repository_files():
        if name.startswith(("docs/", "fixtures/")) or name.endswith(".md"):
            continue
        text = text_of(name)
        if text is not None:
            out[name] = text
    return out


def _page_sections() -> dict[str, set[str]]:
    """The ``INLET_*`` names of each ``## `` section of the environment page."""
    text = ENV_PAGE.read_text(encoding="utf-8")
    return {part.splitlines()[0]: set(_NAME.findall(part)) for part in re.split(r"^## ", text, flags=re.M)[1:]}


def test_the_environment_page_lists_every_variable_and_only_those() -> None:
    sources = _sources()
    used = {name for text in sources.values() for name in _NAME.findall(text)}
    documented = set(_NAME.findall(ENV_PAGE.read_text(encoding="utf-8")))
    assert used - documented == set(), f"read but not in {ENV_PAGE.relative_to(ROOT)}"
    assert documented - used == set(), f"in {ENV_PAGE.relative_to(ROOT)} but read nowhere"


def test_the_environment_page_says_which_variables_inlet_itself_reads() -> None:
    shipped = {
        name for file, text in _sources().items() if file.startswith(SHIPPED) for name in _QUOTED_NAME.findall(text)
    }
    sections = _page_sections()
    assert set(sections) == {"Read by inlet", "Read by the tests, tools and deployment files"}
    assert sections["Read by inlet"] == shipped, "'Read by inlet' lists exactly what core/, connectors/, ... read"
    elsewhere = set(_NAME.findall(ENV_PAGE.read_text(encoding="utf-8"))) - shipped
    assert elsewhere <= sections["Read by the tests, tools and deployment files"]


# --- README code -------------------------------------------------------------------------------------------


def _inlet_imports(tree: ast.Module) -> list[tuple[str, str | None]]:
    """``(module, name)`` of every import from ``inlet`` in ``tree`` (name None for ``import inlet.x``)."""
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "inlet":
            out += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "inlet"]
    return out


def python_problems(page: Path) -> list[str]:
    """What is wrong with the Python blocks of ``page``: not compiling, or importing from inlet what is not there."""
    problems = []
    for block in blocks(page):
        if block.lang not in ("python", "py"):
            continue
        where = f"{page.name}:{block.line}"
        try:
            tree = ast.parse(block.body, where)
            compile(tree, where, "exec")
        except SyntaxError as exc:
            problems.append(f"{where}: does not compile: {exc}")
            continue
        for module, name in _inlet_imports(tree):
            try:
                imported = importlib.import_module(module)
            except ImportError as exc:
                problems.append(f"{where}: import {module}: {exc}")
                continue
            if name is not None and name != "*" and not hasattr(imported, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    problems.append(f"{where}: {module} has no {name}")
    return problems


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_python_compiles_and_its_inlet_imports_exist(readme: Path) -> None:
    problems = python_problems(readme)
    assert not problems, f"{readme.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_readme_check_finds_a_name_inlet_lacks(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(
        "```python\nfrom inlet import Connector, categories_of\nimport inlet.core.nowhere\n```\n"
        "```python\ndef broken(:\n```\n",
        encoding="utf-8",
    )
    problems = python_problems(page)
    assert len(problems) == 3, problems
    assert "inlet has no categories_of" in problems[0]
    assert "import inlet.core.nowhere" in problems[1]
    assert "does not compile" in problems[2]
