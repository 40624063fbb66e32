"""Run the Python and shell blocks of the README and ``docs/`` as a reader would.

Every fenced block whose info string starts with ``python``/``py`` or
``bash``/``sh``/``shell``/``console`` is a test (``tests/docs/test_code_blocks.py``, one per
block, named ``<file>:<line>``). Other languages (``json``, ``text``, ``html``, directives
such as ``{toctree}``) are prose and are not collected.

Not runnable
    An HTML comment on the line right above the fence marks a block that is not run::

        <!-- docs-test: norun (a reason, in parentheses) -->

    The reason is required. GitHub and Sphinx (MyST) render nothing for the comment. A
    Python block marked so is still compiled; a shell block is still parsed (``bash -n``).

Where a page runs
    Each page runs in a project of its own, block after block, in the order of the page:

    * ``README.md``, ``docs/installation.md`` and ``docs/quickstart.md`` start from a fresh
      ``django-admin startproject proj`` (the reader has nothing else yet);
    * every other page continues from the project that ``docs/quickstart.md`` leaves
      (its ``proj`` package, its ``jobs`` app and migrated SQLite database), as a reader who
      did the quickstart does. A page can ask for a fresh project instead with the
      comment ``<!-- docs-test: fresh-project -->`` anywhere in it.

Python blocks
    * A block, or a section of one, that starts with a comment naming a file
      (``# settings.py``, ``# proj/celery.py``, ``# jobs/tasks.py``) is appended to that file
      of the project (``settings.py`` and ``urls.py`` alone mean the ``proj`` package's; a
      missing file is created). A settings section is executed at once with the settings
      written so far; any other module is imported (in a subprocess with Django set up).
    * A block without such a comment whose statements only import or set UPPER_CASE
      names is a settings snippet, and is appended to ``proj/settings.py`` too.
    * Any other block is a fragment: it runs in a Django shell of the project (a
      subprocess with ``django.setup()``). Consecutive fragments share one namespace, as
      in one ``manage.py shell`` session; a shell or settings block ends the session.
    * After a settings or module block, the next subprocess runs ``manage.py check``
      (errors fail the block), so a settings snippet must be accepted by Django and by
      this package's checks.

Shell blocks
    ``bash``/``sh``/``shell`` blocks: each command line (``\\`` continuations joined) runs
    with ``bash -euo pipefail`` in the project's directory; ``cd`` and ``export NAME=value``
    lines change the directory and environment of the lines after them. ``console``
    blocks: each ``$ `` line is a command, the other lines are output and are not
    compared; a command's exit status must be 0, unless the block shows ``$ echo $?``
    right after it, whose output line gives the expected status.

    * ``pip install`` lines (also ``python -m pip``) are not executed; they are checked:
      every extra of ``django-taskqueue[...]`` or ``.[...]`` and every ``--group`` must exist
      in ``pyproject.toml``, and every other requirement (and each extra's requirements)
      must be installed in the environment running the tests. Upgrading pip is skipped.
    * ``python`` and ``celery`` are the test environment's (its ``bin`` directory is first on
      ``PATH``); the repository root is on ``PYTHONPATH``, so the project imports the
      source tree of ``django_taskqueue``.
    * ``celery ... worker`` starts a worker in the background; the line passes once the
      worker logs that it is ready. At the end of the page the runner waits (up to
      60 s) until no ``TaskLog`` of the project is active, then stops the worker.

The runner's own settings
    Appended after the page's settings, always: Celery's ``filesystem://`` transport in the
    project's directory (a Redis URL in the docs is replaced by it, so the run needs no
    service). Nothing else of the docs is rewritten.

After the page
    A page that ran ``manage.py migrate`` must leave no migration unapplied
    (``migrate --check``; a failure is reported on its last ``migrate`` block).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON_LANGS = frozenset({"python", "py", "python3"})
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
#: Pages that start from ``django-admin startproject proj``; the others continue from the
#: quickstart's project.
FRESH_PAGES = frozenset({"README.md", "docs/installation.md", "docs/quickstart.md"})
BASE_PAGE = "docs/quickstart.md"
PROJECT = "proj"
#: Seconds one command line, or one subprocess of Python blocks, may take.
COMMAND_TIMEOUT = 180

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w./-]+\.py)\b")
_SETTING_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


# ------------------------------------------------------------------------------- parsing


@dataclass
class Block:
    """One fenced Python or shell block of a Markdown file."""

    page: str  # the file, relative to the repository root
    line: int  # the line of the opening fence, from 1
    lang: str
    source: str
    norun: str | None = None  # the reason, when marked not runnable
    marker_error: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_python(self) -> bool:
        return self.lang in PYTHON_LANGS


def markdown_files(root: Path = ROOT) -> list[Path]:
    """The README and every Markdown page under ``docs/`` (not the built HTML)."""
    docs = sorted(p for p in (root / "docs").rglob("*.md") if "_build" not in p.parts)
    return [root / "README.md", *docs]


def parse_blocks(text: str, page: str) -> list[Block]:
    """The Python and shell blocks of one Markdown text, with their markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        end = i + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                break
            end += 1
        lang = info.split()[0].lower() if info else ""
        if lang in PYTHON_LANGS or lang in SHELL_LANGS:
            body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[i + 1 : end]]
            block = Block(page, i + 1, lang, "\n".join(body) + "\n")
            marker = _MARKER.match(lines[i - 1]) if i else None
            if marker:
                body_text = marker["body"]
                reason = re.fullmatch(r"norun\s*\((?P<reason>.+)\)", body_text)
                if reason:
                    block.norun = reason["reason"]
                else:
                    block.marker_error = (
                        f"unknown marker {body_text!r}: write "
                        "<!-- docs-test: norun (why it cannot run) -->"
                    )
            blocks.append(block)
        i = end + 1
    return blocks


def collect(root: Path = ROOT) -> list[Block]:
    """Every Python and shell block of the README and ``docs/``, in page order."""
    blocks: list[Block] = []
    for path in markdown_files(root):
        blocks.extend(parse_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(root))))
    return blocks


def wants_fresh_project(text: str) -> bool:
    return "<!-- docs-test: fresh-project -->" in text


# ------------------------------------------------------------------------- classification


@dataclass
class Section:
    """A file section (``path`` set) or a fragment of a Python block."""

    path: str | None
    source: str
    settings: bool = False


def split_python(source: str) -> list[Section]:
    """Split a Python block at its ``# <file>.py`` comment lines (see the module docstring)."""
    sections: list[Section] = []
    path: str | None = None
    current: list[str] = []

    def close() -> None:
        text = "\n".join(current).strip("\n")
        if text.strip() or path is not None:
            sections.append(Section(path, text + "\n"))

    for index, line in enumerate(source.splitlines()):
        header = _FILE_HEADER.match(line)
        previous_blank = index == 0 or not source.splitlines()[index - 1].strip()
        if header and previous_blank:
            close()
            path, current = header["path"], [line]
        else:
            current.append(line)
    close()
    for section in sections:
        if section.path is None and _is_settings_snippet(section.source):
            section.path = "settings.py"
        if section.path is not None:
            section.path = _project_path(section.path)
            section.settings = section.path == f"{PROJECT}/settings.py"
    return sections


def _is_settings_snippet(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    if not tree.body:
        return False
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if not targets or not all(
            isinstance(t, ast.Name) and _SETTING_NAME.match(t.id) for t in targets
        ):
            return False
    return True


def _project_path(path: str) -> str:
    if path in {"settings.py", "urls.py"}:
        return f"{PROJECT}/{path}"
    return path


# ------------------------------------------------------------------------------ running


@dataclass
class Outcome:
    """What running a block gave: ``error`` is None when it passed."""

    error: str | None = None
    ran: list[str] = field(default_factory=list)


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the project's processes: the test env's tools, the source tree."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("PYTHONSTARTUP", None)
    env.update(extra or {})
    return env


def start_project(directory: Path) -> Path:
    """``django-admin startproject proj`` in ``directory``; the project's directory."""
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", PROJECT],
        cwd=directory,
        env=subprocess_env(),
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT,
    )
    return directory / PROJECT


def runner_settings(project: Path) -> str:
    """The runner's own settings, appended after the page's (see the module docstring)."""
    broker = project / ".broker"
    return textwrap.dedent(
        f"""

        # -- docs runner (tests/docs/runner.py): Celery's broker in the project's folder --
        import os as _docs_os

        CELERY_BROKER_URL = "filesystem://"
        CELERY_BROKER_TRANSPORT_OPTIONS = {{
            "data_folder_in": {str(broker / "queue")!r},
            "data_folder_out": {str(broker / "queue")!r},
            "control_folder": {str(broker / "control")!r},
            "store_processed": False,
            "polling_interval": 0.1,
        }}
        for _folder in ("queue", "control"):
            _docs_os.makedirs(_docs_os.path.join({str(broker)!r}, _folder), exist_ok=True)
        """
    )


_DRIVER = r"""
import importlib, json, os, sys, traceback
sys.path.insert(0, os.getcwd())
os.environ["DJANGO_SETTINGS_MODULE"] = sys.argv[1]
steps = json.loads(open(sys.argv[2]).read())
out = []
try:
    import django
    django.setup()
    from django.core.management import call_command
    if steps["check"]:
        call_command("check", fail_level="ERROR")
except BaseException:
    out.append({"setup": traceback.format_exc()})
else:
    namespace = {"__name__": "__main__"}
    for kind, label, payload in steps["steps"]:
        try:
            if kind == "import":
                importlib.import_module(payload)
            else:
                exec(compile(payload, label, "exec"), namespace)
        except BaseException:
            out.append({"step": label, "error": traceback.format_exc()})
        else:
            out.append({"step": label, "error": None})
open(sys.argv[3], "w").write(json.dumps(out))
"""


class PageRun:
    """Runs the blocks of one page in order, in a project of its own; one outcome per block."""

    def __init__(self, page: str, blocks: list[Block], project: Path) -> None:
        self.page = page
        self.blocks = blocks
        self.project = project  # the directory of manage.py
        self.cwd = project
        self.env = subprocess_env()
        self.outcomes: dict[str, Outcome] = {}
        self.workers: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._pending: list[tuple[Block, str, str, str]] = []  # (block, kind, label, payload)
        self._unchecked: list[Block] = []  # blocks whose settings/modules `check` has not seen
        self._log = 0
        self._migrated: Block | None = None  # the page's last block that ran `migrate`
        self._settings_base = (self.project / PROJECT / "settings.py").read_text()
        self._settings_parts: list[str] = self._load_parts()

    # -- settings ----------------------------------------------------------------------

    def _load_parts(self) -> list[str]:
        parts_file = self.project / ".docs-settings.json"
        if parts_file.exists():
            data = json.loads(parts_file.read_text())
            self._settings_base = data["base"]
            return list(data["parts"])
        return []

    def _write_settings(self) -> None:
        text = self._settings_base + "".join(self._settings_parts) + runner_settings(self.project)
        (self.project / PROJECT / "settings.py").write_text(text)
        (self.project / ".docs-settings.json").write_text(
            json.dumps({"base": self._settings_base, "parts": self._settings_parts})
        )

    # -- the page ----------------------------------------------------------------------

    def run(self) -> dict[str, Outcome]:
        self._write_settings()
        try:
            for block in self.blocks:
                outcome = self.outcomes.setdefault(block.id, Outcome())
                try:
                    self._run_block(block, outcome)
                except Exception as exc:  # reported on the block; the page goes on
                    self._fail(block, f"{type(exc).__name__}: {exc}")
            self._flush()
            if self._migrated is not None:
                self._check_migrated(self._migrated)
        finally:
            self._stop_workers()
        return self.outcomes

    def _check_migrated(self, block: Block) -> None:
        """A page that migrates leaves no app unmigrated (the admin's tables included)."""
        done = self._in_project([sys.executable, "manage.py", "migrate", "--check", "--plan"])
        if done.returncode:
            output = (done.stdout + done.stderr).decode(errors="replace")
            self._fail(block, f"after the page, migrations are not applied:\n{output}")

    def _in_project(self, command: list[str]) -> subprocess.CompletedProcess[bytes]:
        """Run ``command`` in the page's project, with its environment, within COMMAND_TIMEOUT."""
        return subprocess.run(
            command,
            check=False,
            cwd=self.project,
            env=self.env,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )

    def _fail(self, block: Block, message: str) -> None:
        outcome = self.outcomes.setdefault(block.id, Outcome())
        outcome.error = (outcome.error + "\n\n" if outcome.error else "") + message

    def _run_block(self, block: Block, outcome: Outcome) -> None:
        if block.marker_error:
            self._fail(block, block.marker_error)
            return
        if block.is_python:
            compile(block.source, block.id, "exec")  # norun blocks too
            if block.norun is None:
                self._run_python(block)
        else:
            self._check_shell_syntax(block)
            if block.norun is None:
                self._flush()
                self._run_shell(block)

    def _check_shell_syntax(self, block: Block) -> None:
        script = "\n".join(cmd for cmd, _ in shell_commands(block))
        done = subprocess.run(
            ["bash", "-n"], input=script.encode(), capture_output=True, check=False
        )
        if done.returncode:
            raise AssertionError(f"bash -n: {done.stderr.decode()}")

    # -- Python ------------------------------------------------------------------------

    def _run_python(self, block: Block) -> None:
        for section in split_python(block.source):
            if section.path is None:
                self._pending.append((block, "exec", block.id, section.source))
                continue
            if section.settings:
                if self._pending:  # they run with the settings written before them
                    self._flush()
                self._settings_parts.append("\n\n" + section.source)
                self._write_settings()
                if self._exec_settings(block):
                    self._unchecked.append(block)
                else:  # reported on this block; the blocks after it run without it
                    self._settings_parts.pop()
                    self._write_settings()
                continue
            target = self.project / section.path
            self._append(target, section.source)
            module = section.path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            self._pending.append((block, "import", block.id, module))
            self._unchecked.append(block)

    def _append(self, target: Path, source: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        existing = target.read_text() if target.exists() else ""
        target.write_text(existing + ("\n\n" if existing.strip() else "") + source)

    def _exec_settings(self, block: Block) -> bool:
        """Run the settings module as written so far (in a subprocess: it imports things)."""
        code = (
            "import runpy, sys; sys.path.insert(0, '.'); "
            f"runpy.run_path({str(self.project / PROJECT / 'settings.py')!r})"
        )
        done = self._in_project([sys.executable, "-c", code])
        if done.returncode:
            self._fail(block, f"settings.py does not run:\n{done.stderr.decode()}")
        return not done.returncode

    def _flush(self) -> None:
        """Run the pending Python steps in one Django shell subprocess."""
        if not self._pending and not self._unchecked:
            return
        pending, self._pending = self._pending, []
        unchecked, self._unchecked = self._unchecked, []
        steps_file = self.project / ".docs-steps.json"
        result_file = self.project / ".docs-result.json"
        steps = [[kind, label, payload] for _, kind, label, payload in pending]
        # `check` once settings or modules changed since the last run.
        steps_file.write_text(json.dumps({"check": bool(unchecked), "steps": steps}))
        result_file.unlink(missing_ok=True)
        settings = f"{PROJECT}.settings"
        done = self._in_project(
            [sys.executable, "-c", _DRIVER, settings, str(steps_file), str(result_file)]
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        if not result_file.exists():
            for block in {id(b): b for b in [*unchecked, *(p[0] for p in pending)]}.values():
                self._fail(block, f"the Django shell subprocess died:\n{output}")
            return
        results = json.loads(result_file.read_text())
        if results and "setup" in results[0]:
            # Django did not start, or `manage.py check` found errors: the blocks that
            # changed settings or modules since the last check are the suspects.
            for block in {id(b): b for b in unchecked}.values():
                self._fail(block, f"Django setup or `check` failed:\n{results[0]['setup']}")
            for block in {id(p[0]): p[0] for p in pending}.values():
                self._fail(block, f"not run: Django did not start:\n{results[0]['setup']}")
            return
        by_block = {p[0].id: p[0] for p in pending}
        for result in results:
            if result["error"]:
                self._fail(by_block[result["step"]], result["error"])

    # -- shell -------------------------------------------------------------------------

    def _run_shell(self, block: Block) -> None:
        commands = shell_commands(block)
        for index, (command, expected) in enumerate(commands):
            outcome = self.outcomes[block.id]
            outcome.ran.append(command)
            words = _words(command)
            if not words or words[:2] == ["echo", "$?"]:
                continue
            if is_pip_install(words):
                check_pip_install(words)
                continue
            if words[0] == "cd":
                self.cwd = (self.cwd / words[1]).resolve()
                continue
            if words[0] == "export":
                for assignment in words[1:]:
                    name, _, value = assignment.partition("=")
                    self.env[name] = value
                continue
            if "manage.py" in words and "migrate" in words:
                self._migrated = block
            if words[0] == "celery" and "worker" in words:
                self._start_worker(block, command)
                continue
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                check=False,
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
            )
            if done.returncode != expected:
                output = (done.stdout + done.stderr).decode(errors="replace")
                raise AssertionError(
                    f"`{command}` (command {index + 1}) exited {done.returncode}, "
                    f"expected {expected}:\n{output}"
                )

    def _start_worker(self, block: Block, command: str) -> None:
        self._log += 1
        log = self.project / f".worker-{self._log}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=self.cwd,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append((process, log))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if re.search(r"\bready\.", text):
                return
            if process.poll() is not None:
                raise AssertionError(f"`{command}` exited {process.returncode}:\n{text}")
            time.sleep(0.2)
        raise AssertionError(f"`{command}` was not ready within 60 s:\n{log.read_text()}")

    def _stop_workers(self) -> None:
        if not self.workers:
            return
        wait_until_idle(self.project, self.env)
        for process, _ in self.workers:
            # The tasks are done (see above), so the worker's whole process group is killed:
            # a prefork worker's own shutdown takes several seconds, and tests nothing here.
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until_idle(project: Path, env: dict[str, str], timeout: float = 60) -> None:
    """Wait until the project's database has no active TaskLog (the worker's work is done)."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, os.getcwd())
        os.environ["DJANGO_SETTINGS_MODULE"] = "{PROJECT}.settings"
        import django
        django.setup()
        from django.apps import apps
        if not apps.is_installed("django_taskqueue"):
            sys.exit(0)
        from django_taskqueue.models import TaskLog
        deadline = time.monotonic() + {timeout}
        while time.monotonic() < deadline:
            try:
                if not TaskLog.objects.active().exists():
                    sys.exit(0)
            except Exception:  # no tables yet: nothing to wait for
                sys.exit(0)
            time.sleep(0.2)
        """
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        timeout=timeout + 30,
    )


def shell_commands(block: Block) -> list[tuple[str, int]]:
    """The command lines of a shell block, each with the exit status it must have."""
    lines = block.source.splitlines()
    if block.lang != "console":
        joined = re.sub(r"\\\n", " ", "\n".join(lines))
        return [
            (ln, 0) for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
        ]
    commands: list[tuple[str, int]] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("$ "):
            continue
        command = stripped[2:]
        if command == "echo $?" and commands:
            following = lines[index + 1].strip() if index + 1 < len(lines) else ""
            if following.isdigit():
                commands[-1] = (commands[-1][0], int(following))
            continue
        commands.append((command, 0))
    return commands


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:
        return command.split()


def is_pip_install(words: list[str]) -> bool:
    if words[:2] == ["pip", "install"]:
        return True
    return len(words) > 3 and words[1:4] == ["-m", "pip", "install"]


def _pyproject() -> dict[str, Any]:
    import tomllib  # Python 3.11+: the test module skips before

    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def check_pip_install(words: list[str]) -> None:
    """Check a ``pip install`` line against pyproject.toml and the running environment."""
    from packaging.requirements import Requirement

    project = _pyproject()
    extras: dict[str, list[str]] = project["project"]["optional-dependencies"]
    groups: dict[str, Any] = project.get("dependency-groups", {})
    args = words[words.index("install") + 1 :]
    if any(a in {"--upgrade", "-U"} for a in args) and any(a.startswith("pip") for a in args):
        return
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--group":
            if args[i + 1] not in groups:
                raise AssertionError(f"pip --group {args[i + 1]}: no such group in pyproject.toml")
            i += 2
            continue
        if arg in {"-e", "--editable"}:
            i += 1
            continue
        if arg.startswith("-"):
            i += 1
            continue
        local = re.fullmatch(r"\.(\[(?P<extras>[^\]]*)\])?", arg)
        requirement = None if local else Requirement(arg)
        if local or (requirement and requirement.name == project["project"]["name"]):
            wanted = (
                [e.strip() for e in (local["extras"] or "").split(",") if e.strip()]
                if local
                else sorted(requirement.extras if requirement else ())
            )
            for extra in wanted:
                if extra not in extras:
                    raise AssertionError(f"{arg}: the extra {extra!r} is not in pyproject.toml")
                for needed in extras[extra]:
                    _installed(Requirement(needed).name, f"{arg} (extra {extra})")
        elif requirement is not None:
            _installed(requirement.name, arg)
        i += 1


def _installed(name: str, what: str) -> None:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise AssertionError(f"{what}: {name} is not installed in the test environment") from None


# ------------------------------------------------------------------------------ session


class DocsSession:
    """Runs each page once (lazily, in the page's project) and keeps its outcomes."""

    def __init__(self, workdir: Path, root: Path = ROOT) -> None:
        self.workdir = workdir
        self.root = root
        self.blocks = collect(root)
        self.pages: dict[str, dict[str, Outcome]] = {}
        self.projects: dict[str, Path] = {}
        self._template: Path | None = None

    def blocks_of(self, page: str) -> list[Block]:
        return [b for b in self.blocks if b.page == page]

    def _fresh(self, name: str) -> Path:
        if self._template is None:
            (self.workdir / "template").mkdir()
            self._template = start_project(self.workdir / "template")
        target = self.workdir / name / PROJECT
        shutil.copytree(self._template, target)
        return target

    def project_of(self, page: str) -> Path:
        """Run ``page`` if it has not run yet; the directory of its project."""
        self.outcomes_of(page)
        return self.projects[page]

    def outcomes_of(self, page: str) -> dict[str, Outcome]:
        if page in self.pages:
            return self.pages[page]
        slug = re.sub(r"\W+", "-", page)
        text = (self.root / page).read_text(encoding="utf-8")
        if page in FRESH_PAGES or wants_fresh_project(text):
            project = self._fresh(slug)
        else:
            base = self.outcomes_of(BASE_PAGE)
            failed = [bid for bid, o in base.items() if o.error]
            if failed:
                message = f"the project of {BASE_PAGE} failed ({', '.join(failed)})"
                self.pages[page] = {b.id: Outcome(message) for b in self.blocks_of(page)}
                return self.pages[page]
            project = self.workdir / slug / PROJECT
            shutil.copytree(self.projects[BASE_PAGE], project)
        self.projects[page] = project
        self.pages[page] = PageRun(page, self.blocks_of(page), project).run()
        return self.pages[page]


def block_ids(blocks: list[Block]) -> Iterator[str]:
    return (b.id for b in blocks)
