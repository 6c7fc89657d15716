"""The docs, executed: each tutorial runs as written in a scratch copy of the repository, and every Python
block of the other pages runs.

Convention (also in ``docs/development.md``, "Tested docs"):

- **Tutorials** (``docs/tutorials/*.md``) are run top to bottom in a scratch copy of the repository (the files
  a commit of the working tree would hold: ``git ls-files --cached --others --exclude-standard``, symlinks
  kept), as a user's fresh clone would run them:

  - a fenced block whose info string has ``title="PATH"`` is a file the reader writes: the test writes the
    block to ``PATH`` (relative to the clone). In a ``diff`` block the lines are an edit instead: `` `` (one
    space) context, ``-`` removed, ``+`` added, ``@@`` between hunks; each hunk's old lines must occur exactly
    once in the file and are replaced by its new lines, so an edit that no longer applies fails;
  - a ``console`` block holds commands (lines starting with ``$ ``, continued by a trailing ``\\``), each
    followed by its expected output (stdout and stderr as a terminal shows them). Commands run in ``bash``
    (``-o pipefail``) in the clone, with ``inlet`` and ``python`` on ``PATH`` meaning this interpreter
    (``python -m inlet``) and ``PYTHONPATH`` the clone, so the clone's ``inlet/`` package and the customer
    modules the tutorial adds are the ones imported. A command must exit 0 (a tutorial shows an expected
    failure with ``|| echo "exit $?"``) and print exactly the expected lines, compared without leading and
    trailing blanks, where ``...`` in a line matches any text and a line that is only ``...`` matches any
    number of lines (durations, receive times, ids). ``$ export NAME=VALUE`` sets a variable for the
    commands after it. A command ending in ``&`` runs in the background: its expected lines are the first
    it prints, and it is stopped (SIGTERM to its process group) when the tutorial ends;
  - placeholders: the ports ``8208`` (FHIR test server) and ``18830`` (Mosquitto) are replaced by free
    ports everywhere (commands, files, expected output), and the clone's path is shown as ``~/inlet``;
  - any other block (``bash`` for one-time setup such as cloning and ``scripts/run``) is not run.

- **Every other page**: its ``python`` blocks run in order as one script (a fresh interpreter, the repository
  on ``PYTHONPATH``), so plugin code in the docs imports and works; its ``yaml`` blocks must parse.

The tutorials start real local servers (the FHIR test server, Mosquitto through ``tools.services``) on
loopback and are marked slow; every wait is bounded and generous, for a loaded 2-core CI machine.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.parent != DOCS / "tutorials")

PORTS = ("8208", "18830")
"""Port numbers the tutorials use; each is replaced by a free port."""
CLONE = "~/inlet"
"""How the tutorials show the clone's path."""
COMMAND_TIMEOUT = 300.0
"""Seconds one foreground command may take (a recording waits for its idle time; CI machines are loaded)."""
BACKGROUND_TIMEOUT = 120.0
"""Seconds a background command has to print its expected first lines."""
_FENCE = re.compile(
    r"^(?P<indent>[ ]*)(?P<fence>`{3,})(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S
)
_ENV_VARS_DROPPED = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES", "VIRTUAL_ENV")


# --- parsing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of a page."""

    lang: str
    options: dict[str, str]
    body: str
    line: int


@dataclass
class Command:
    """One ``$ `` line of a console block and the output shown after it."""

    text: str
    expected: list[str]
    line: int


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, in order, dedented to their fence."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        info = m["info"].strip()
        lang, _, rest = info.partition(" ")
        options = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        pad = m["indent"]
        body = "".join(
            "\n" if not line.strip() else line.removeprefix(pad) for line in m["body"].splitlines(keepends=True)
        )
        out.append(Block(lang.strip().lstrip("{").lstrip("."), options, body, text.count("\n", 0, m.start()) + 1))
    return out


def snippets(body: str) -> str:
    """``--8<-- "path"`` lines (pymdownx.snippets, what the site shows) replaced by the file, as the site does."""
    return re.sub(r'^--8<-- "([^"]+)"$', lambda m: (ROOT / m[1]).read_text(encoding="utf-8"), body, flags=re.M)


def commands(block: Block) -> list[Command]:
    """The commands of a console block with their expected output lines."""
    out: list[Command] = []
    lines = block.body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            text, start = line[2:], i
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + " " + lines[i].strip()
            out.append(Command(text.strip(), [], block.line + 1 + start))
        elif out:
            out[-1].expected.append(line)
        elif line.strip():
            raise AssertionError(f"line {block.line + 1 + i}: console block output before any '$ ' command: {line!r}")
        i += 1
    for cmd in out:
        while cmd.expected and not cmd.expected[-1].strip():
            cmd.expected.pop()
    return out


# --- matching ----------------------------------------------------------------------------------------------


def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.strip().split("...")), re.S)


def lines_match(expected: list[str], actual: list[str]) -> bool:
    """Expected lines (``...`` wildcards) against actual ones, both compared without outer blanks."""
    exp = [e.strip() for e in expected]
    act = [a.strip() for a in actual]
    patterns = [None if e == "..." else _line_pattern(e) for e in exp]
    # reach[j]: the first i expected lines can match the first j actual lines.
    reach = [True] + [False] * len(act)
    for pattern in patterns:
        nxt = [False] * (len(act) + 1)
        if pattern is None:
            seen = False
            for j in range(len(act) + 1):
                seen = seen or reach[j]
                nxt[j] = seen
        else:
            for j in range(1, len(act) + 1):
                nxt[j] = reach[j - 1] and pattern.fullmatch(act[j - 1]) is not None
        reach = nxt
    return reach[len(act)]


def test_the_matcher_understands_the_wildcards() -> None:
    assert lines_match(["ok: ... events", "..."], ["ok: 12 events", "a", "b"])
    assert lines_match(["a", "...", "z"], ["a", "z"])
    assert lines_match(["  centred title (... s)"], ["centred title (0.3 s)   "])
    assert not lines_match(["a"], ["a", "b"])
    assert not lines_match(["ok: 12 events"], ["ok: 13 events"])
    assert not lines_match([], ["unexpected output"])


# --- running -----------------------------------------------------------------------------------------------


@dataclass
class Background:
    """A command running in the background and everything it printed so far."""

    command: Command
    process: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def first_lines(self, count: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return self.seen

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        if self.reader is not None:
            self.reader.join(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Tutorial:
    """Runs one tutorial page in a scratch clone."""

    def __init__(self, page: Path, clone: Path, ports: dict[str, str], bin_dir: Path) -> None:
        self.page, self.clone, self.ports = page, clone, ports
        env = {k: v for k, v in os.environ.items() if not k.startswith("INLET_") and k not in _ENV_VARS_DROPPED}
        env.update(
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=str(clone),
            NO_COLOR="1",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.env = env
        self.background: list[Background] = []
        self.log: list[str] = []

    def substitute(self, text: str) -> str:
        for placeholder, port in self.ports.items():
            text = re.sub(rf"\b{placeholder}\b", port, text)
        return text

    def shown(self, output: str) -> list[str]:
        return output.replace(str(self.clone), CLONE).splitlines()

    def fail(self, where: int, message: str) -> None:
        context = "\n".join(self.log[-6:])
        for bg in self.background:
            context += f"\n[background `{bg.command.text}` printed]\n" + "\n".join(bg.seen[-20:])
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        pytest.fail(f"{page}:{where}: {message}\n--- earlier steps ---\n{context}", pytrace=False)

    def run(self) -> None:
        try:
            for block in blocks(self.page):
                if "title" in block.options:
                    self.write(block)
                elif block.lang == "console":
                    for cmd in commands(block):
                        self.execute(cmd)
        finally:
            for bg in reversed(self.background):
                bg.stop()

    def write(self, block: Block) -> None:
        path = self.clone / block.options["title"]
        body = self.substitute(block.body)
        if block.lang == "diff":
            if not path.is_file():
                self.fail(block.line, f"diff for {block.options['title']}, which does not exist")
            text = path.read_text(encoding="utf-8")
            for old, new in hunks(body):
                if text.count(old) != 1:
                    self.fail(
                        block.line,
                        f"edit of {block.options['title']} does not apply: the lines\n{old}"
                        f"occur {text.count(old)} times (need exactly once) in\n{text}",
                    )
                text = text.replace(old, new)
            path.write_text(text, encoding="utf-8")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
        self.log.append(f"wrote {block.options['title']}")

    def execute(self, cmd: Command) -> None:
        text = self.substitute(cmd.text)
        expected = [self.substitute(line) for line in cmd.expected]
        if m := re.fullmatch(r"export (\w+)=(.*)", text):
            self.env[m[1]] = shlex.split(m[2])[0] if m[2] else ""
            self.log.append(f"$ {text}")
            return
        background = text.endswith("&") and not text.endswith("&&")
        argv = ["bash", "-o", "pipefail", "-c", text.removesuffix("&").rstrip()]
        began = time.monotonic()
        if background:
            process = subprocess.Popen(
                argv,
                cwd=self.clone,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            bg = Background(cmd, process)
            self.background.append(bg)
            bg.reader = threading.Thread(target=bg.pump, daemon=True)
            bg.reader.start()
            actual = self.shown("\n".join(bg.first_lines(len(expected), BACKGROUND_TIMEOUT)))
            status = process.poll() or 0  # still running, as it should be, or what it exited with
        else:
            # Its own process group: a pipeline's processes are all stopped if it hangs.
            process = subprocess.Popen(
                argv,
                cwd=self.clone,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate()
                self.fail(cmd.line, f"`{text}` did not finish within {COMMAND_TIMEOUT:.0f} s; it printed:\n{output}")
            actual, status = self.shown(output), process.returncode
        self.log.append(f"$ {text}   [{time.monotonic() - began:.1f} s, exit {status}]")
        if status != 0:
            self.fail(cmd.line, f"`{text}` exited {status}; it printed:\n" + "\n".join(actual))
        if not lines_match(expected, actual):
            self.fail(
                cmd.line,
                f"`{text}` printed what the tutorial does not show.\n--- expected ---\n"
                + "\n".join(expected)
                + "\n--- actual ---\n"
                + "\n".join(actual),
            )


def hunks(body: str) -> Iterator[tuple[str, str]]:
    """(old text, new text) of each hunk of a diff block."""
    for chunk in re.split(r"^@@.*\n", body, flags=re.M):
        old, new = [], []
        for line in chunk.splitlines(keepends=True):
            tag, rest = line[:1], line[1:]
            if tag in (" ", "-"):
                old.append(rest)
            if tag in (" ", "+"):
                new.append(rest)
            if tag == "\n":
                old.append("\n")
                new.append("\n")
        if old or new:
            yield "".join(old), "".join(new)


def scratch_clone(target: Path) -> Path:
    """The files a commit of the working tree would hold, copied to ``target`` (symlinks kept)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail(
            "the tutorials run in a scratch copy made with `git ls-files`: git and a git work tree are needed",
            pytrace=False,
        )
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source, dest = ROOT / name, target / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the working tree
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            dest.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, dest)
    return target


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _wrappers(bin_dir: Path) -> Path:
    """``inlet`` and ``python`` for the tutorials' commands: this interpreter, as an activated venv would be."""
    bin_dir.mkdir()
    for name, args in (("inlet", ' -m inlet "$@"'), ("python", ' "$@"')):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)}{args}\n")
        script.chmod(0o755)
    return bin_dir


def _needs_mosquitto(page: Path) -> bool:
    return "python -m tools.services mosquitto" in page.read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    "page", [pytest.param(p, id=p.stem, marks=[pytest.mark.mqtt] if _needs_mosquitto(p) else []) for p in TUTORIALS]
)
def test_tutorial_runs_as_written(page: Path, tmp_path: Path) -> None:
    if _needs_mosquitto(page) and shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail(
            "this tutorial starts Mosquitto: run `python -m tools.services install-mosquitto` (scripts/test does)",
            pytrace=False,
        )
    clone = scratch_clone(tmp_path / "inlet")
    Tutorial(page, clone, {p: _free_port() for p in PORTS}, _wrappers(tmp_path / "bin")).run()


def test_there_are_tutorials() -> None:
    assert {p.stem for p in TUTORIALS} >= {"new-hospital", "new-meter-hub"}


# --- the other pages' code blocks ---------------------------------------------------------------------------

PYTHON_PAGES = [p for p in PAGES if any(b.lang in ("python", "py") for b in blocks(p))]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_run(page: Path, tmp_path: Path) -> None:
    code = [
        f"# --- {page.relative_to(ROOT)}, line {b.line}\n{snippets(b.body)}"
        for b in blocks(page)
        if b.lang in ("python", "py")
    ]
    script = tmp_path / f"{page.stem}.py"
    # One script: a block's own `from __future__ import annotations` (an included module) moves to the top.
    future = "from __future__ import annotations\n"
    script.write_text(future + "\n".join(code).replace(future, ""), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INLET_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"the Python blocks of {page.relative_to(ROOT)} failed:\n{done.stderr}\n(run as one script: {script})"
    )


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b.lang == "yaml" for b in blocks(p))], ids=lambda p: str(p.relative_to(DOCS))
)
def test_yaml_blocks_parse(page: Path) -> None:
    for block in blocks(page):
        if block.lang == "yaml":
            try:
                list(yaml.safe_load_all(block.body))
            except yaml.YAMLError as exc:
                pytest.fail(f"{page.relative_to(ROOT)}:{block.line}: YAML block does not parse: {exc}", pytrace=False)
