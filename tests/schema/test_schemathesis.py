"""schemathesis against the example project: every check and every phase, as a user and as staff.

The example project runs as it is deployed, in processes of its own, with its own
settings (``example_project.settings``, ``DJANGO_DEBUG=0``): Django's server on a
loopback port, a real ``celery worker`` on the Redis broker (``TASKQUEUE_TEST_BROKER``)
and a PostgreSQL database of its own (``<TASKQUEUE_TEST_DB_NAME>_schema``), so every
task the API accepts is really published and run. ``tests/schema/seed.py`` writes small
files inside the example's ``ALLOWED_FILE_ROOTS``, creates the users with API tokens and
records a task of each status per user; ``tests/schema/hooks.py`` points the generated
file paths at those files, so ``create_task`` and ``bulk_create`` are exercised on their
accepting side too, not only on their 400s.

schemathesis's command line then runs against ``/api/schema/`` with all its checks and
all its phases (examples, coverage, fuzzing, stateful), once per identity:

- ``alice``, an ordinary user, with ``bob`` as her peer: object-level authorization
  probes replay alice's reads as bob, who must not see her tasks;
- ``admin``, a staff user, who sees every task.

The run is bounded by examples, not time (``TASKQUEUE_TEST_SCHEMA_EXAMPLES`` per
operation and phase, 25 by default, with a fixed seed ``TASKQUEUE_TEST_SCHEMA_SEED``),
so a failure is found again by the same command on a slower machine. The reports
(JUnit, JSON, and the text of the run) and the server's and worker's logs are kept
under pytest's temporary directory; the assertion message lists each failure with a
curl command that reproduces it.

``tox -e schema`` runs it (docs/api.md, "Testing the API against its schema").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.example.support import MANAGE, ROOT, example_env, needs_example_deps
from tests.live import BROKER_URL

pytest.importorskip("schemathesis")

pytestmark = [pytest.mark.integration, pytest.mark.schema, needs_example_deps]

HOOKS = Path(__file__).with_name("hooks.py")
EXAMPLE_DIR = MANAGE.parent
#: Examples per operation in each generating phase (the coverage phase makes as many as
#: the schema's boundaries call for).
EXAMPLES = int(os.environ.get("TASKQUEUE_TEST_SCHEMA_EXAMPLES", "25"))
SEED = int(os.environ.get("TASKQUEUE_TEST_SCHEMA_SEED", "20260413"))
#: Seconds one schemathesis run may take before the test gives up on it.
RUN_TIMEOUT = 900
#: The last line of a traceback: ``package.module.SomeError: message``.
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
#: The operations whose accepting side must be reached (a 201 in the server's log).
CREATING = ("/api/tasks/create_task/", "/api/tasks/bulk_create/")


# --------------------------------------------------------------------------- processes


@dataclass
class Child:
    """A process the fixture started, in a session of its own, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the child's process group (a worker and its pool), then SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(10)


def start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Child:
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=EXAMPLE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, process, log_path)


def wait_until(child: Child, ready: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if child.process.poll() is not None:
            pytest.fail(f"the {child.name} exited early:\n{child.log[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the {child.name} was not {what} after {timeout}s:\n{child.log[-4000:]}")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=EXAMPLE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, f"{args} failed:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


# --------------------------------------------------------------------------- database


def pg_params() -> dict[str, str]:
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD", ""),
    }


def recreate_database(name: str, *, drop_only: bool = False) -> None:
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, **pg_params()) as admin:  # type: ignore[arg-type]
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            admin.execute(f'CREATE DATABASE "{name}"')


def database_url(name: str) -> str:
    params = pg_params()
    password = f":{params['password']}" if params["password"] else ""
    return f"postgres://{params['user']}{password}@{params['host']}:{params['port']}/{name}"


def query(name: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dbname=name, **pg_params()) as conn:  # type: ignore[arg-type]
        return conn.execute(sql, params).fetchall()


# --------------------------------------------------------------------------- the example


@dataclass
class ExampleAPI:
    """The running example: its URL, its processes and what the seed made."""

    url: str
    database: str
    data_dir: Path
    seeds_file: Path
    tokens: dict[str, str]
    web: Child
    worker: Child


@pytest.fixture(scope="module")
def example_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleAPI]:
    """The example project on PostgreSQL and Redis: its web server and a worker."""
    data_dir = tmp_path_factory.mktemp("schema-example")
    logs = data_dir / "logs"
    logs.mkdir()
    database = f"{os.environ.get('TASKQUEUE_TEST_DB_NAME', 'test_django_taskqueue')}_schema"
    recreate_database(database)
    env = example_env(
        data_dir,
        DATABASE_URL=database_url(database),
        CELERY_BROKER_URL=BROKER_URL,
        # As deployed: error pages without debug information.
        DJANGO_DEBUG="0",
        # The example's apps and this checkout (tests.schema.seed, django_taskqueue).
        PYTHONPATH=os.pathsep.join([str(EXAMPLE_DIR), str(ROOT)]),
    )
    children: list[Child] = []
    celery = [sys.executable, "-m", "celery", "-A", "example_project"]
    queues = "high,default,low"
    try:
        manage(env, str(MANAGE), "migrate", "--no-input", "-v", "0")
        seeded = json.loads(manage(env, "-m", "tests.schema.seed"))
        seeds_file = data_dir / "seeds.json"
        seeds_file.write_text(json.dumps(seeded["seeds"]))
        # Messages a previous run left in the broker name rows of a dropped database.
        manage(env, *celery[1:], "purge", "-f", "-Q", queues)

        hostname = f"schema-{os.getpid()}@{socket.gethostname()}"
        worker = start(
            "worker",
            [
                *celery,
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "-Q",
                queues,
                "-n",
                hostname,
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            env,
            logs,
        )
        children.append(worker)
        port = free_port()
        web = start(
            "web",
            [sys.executable, str(MANAGE), "runserver", "--noreload", f"127.0.0.1:{port}"],
            env,
            logs,
        )
        children.append(web)
        wait_until(worker, lambda: " ready." in worker.log, 90, "ready")
        wait_until(web, lambda: accepts(port), 60, "listening")
        yield ExampleAPI(
            url=f"http://127.0.0.1:{port}",
            database=database,
            data_dir=data_dir,
            seeds_file=seeds_file,
            tokens=seeded["tokens"],
            web=web,
            worker=worker,
        )
    finally:
        for child in reversed(children):
            child.stop()
        subprocess.run(
            [*celery, "purge", "-f", "-Q", queues],
            cwd=EXAMPLE_DIR,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        recreate_database(database, drop_only=True)


# --------------------------------------------------------------------------- the run


def toml(value: Any) -> str:
    """A TOML value: JSON's strings, numbers, booleans and arrays are valid TOML too."""
    return json.dumps(value)


#: Which identity each run authenticates as, and who its peers are (users who must not
#: see one another's tasks).
IDENTITIES = {
    "alice": ["alice", "bob"],
    "admin": [],
}


def run_schemathesis(api: ExampleAPI, user: str, out: Path) -> tuple[int, str, dict[str, Any]]:
    """Run ``st run`` as ``user``; its exit code, its text and its JSON report."""
    out.mkdir()
    auth = {
        "auth": [
            {
                "name": name,
                "fixedHeaders": [{"name": "Authorization", "value": f"Token {token}"}],
            }
            # The run's identity first: schemathesis starts every operation with it.
            for name, token in sorted(api.tokens.items(), key=lambda item: item[0] != user)
        ]
    }
    (out / "auth.json").write_text(json.dumps(auth))
    peers = f"peers = {toml(IDENTITIES[user])}" if IDENTITIES[user] else ""
    config = out / "schemathesis.toml"
    config.write_text(
        f"""
hooks = {toml(str(HOOKS))}
seed = {SEED}
# One request at a time: the machine's cores go to the server and the worker.
workers = 1
request-timeout = 30
# Keep testing an operation after its first failure, so the report lists every
# distinct failure rather than the first of each operation.
continue-on-failure = true
# A live stream lasts as long as its task; a few events say whether they match the schema.
max-stream-events = 5

[generation]
max-examples = {EXAMPLES}
# Each run starts afresh: no examples or crashes remembered from an earlier run.
database = "none"

[cache]
directory = {toml(str(out / "cache"))}

# Every check (`enabled` also turns on checks a later release adds).
[checks]
enabled = true

# The schema has few examples of its own: fill in the missing ones from the schema.
[phases.examples]
fill-missing = true

[auth.wfc]
path = {toml(str(out / "auth.json"))}
user = {toml(user)}
{peers}

[reports]
directory = {toml(str(out))}
junit = {{ enabled = true, path = {toml(str(out / "junit.xml"))} }}
json = {{ enabled = true, path = {toml(str(out / "report.json"))} }}

# A stream of a task that is still pending sends one event, then a keep-alive every
# 15 s: stop reading it after 3 s.
[[operations]]
include-path = "/api/tasks/{{id}}/stream/"
request-timeout = 3

# A NUL in a metadata key is refused (400) like one in a string, but OpenAPI 3.0 cannot
# state a rule on object keys (the field's description does): generate no NUL for the
# two operations that take metadata. Their strings' NUL rule is tested in
# tests/api/test_bad_input.py; every other operation is still sent NULs.
[[operations]]
include-path-regex = "/api/tasks/(create_task|bulk_create)/$"
generation.allow-x00 = false

# An Idempotency-Key is valid whatever its value, and one that an earlier case used for
# another file is refused for that reason alone: 422, documented. Valid data refused by
# the state of the server, like the 409 that schemathesis already allows.
[[operations]]
include-path = "/api/tasks/create_task/"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx",
]
"""
    )
    env = dict(os.environ, TASKQUEUE_SCHEMA_SEEDS=str(api.seeds_file), NO_COLOR="1")
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
    completed = subprocess.run(
        [*argv, "--no-color", f"{api.url}/api/schema/"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    text = completed.stdout + completed.stderr
    (out / "output.txt").write_text(text)
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return completed.returncode, text, report


def created_by_path(access_log: str) -> dict[str, int]:
    """How many 201 answers each creating operation gave, from the server's access log."""
    counts = dict.fromkeys(CREATING, 0)
    for path in re.findall(r'"POST (\S+) HTTP/[\d.]+" 201 ', access_log):
        if path in counts:
            counts[path] += 1
    return counts


def server_errors(server_log: str) -> dict[str, str]:
    """The tracebacks the server logged (``Internal Server Error: <path>``), one per cause.

    Keyed by the path and the exception's last line, so a failure hit a hundred times
    is listed once.
    """
    found: dict[str, str] = {}
    for block in server_log.split("Internal Server Error: ")[1:]:
        # The traceback ends where the next access-log line ("[04/Dec/2026 ...]") starts.
        lines: list[str] = []
        for line in block.splitlines():
            if line.startswith("[") and lines:
                break
            lines.append(line)
        raised = [line for line in lines if EXCEPTION_LINE.match(line)]
        cause = f"{lines[0]}: {raised[-1] if raised else lines[-1]}"
        found.setdefault(cause, "Internal Server Error: " + "\n".join(lines))
    return found


def failures_text(text: str) -> str:
    """The FAILURES and SUMMARY sections of schemathesis's output."""
    start = text.find(" FAILURES ")
    return text[text.rfind("\n", 0, start) + 1 :] if start >= 0 else text[-8000:]


@pytest.mark.parametrize("user", sorted(IDENTITIES))
def test_schemathesis_finds_no_failure(example_api: ExampleAPI, user: str, tmp_path: Path) -> None:
    log_start = len(example_api.web.log)
    code, text, report = run_schemathesis(example_api, user, tmp_path / f"schemathesis-{user}")
    access_log = example_api.web.log[log_start:]

    problems = []
    # The harness itself: the whole schema was tested, in every phase...
    operations = report.get("operations", {})
    if not operations or operations.get("tested") != operations.get("total"):
        problems.append(f"not every operation was tested: {operations or text[-4000:]}")
    phases = report.get("phases", {})
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        if phases.get(phase, {}).get("status") in (None, "skip"):
            problems.append(f"the {phase} phase did not run: {phases.get(phase)}")
    # ...and the seed files made the API accept requests, not only refuse them.
    for path, count in created_by_path(access_log).items():
        if not count:
            problems.append(f"no request to {path} was accepted (201): the seeds were not used")
    # Publishing really happened: the worker ran tasks the API started for this user.
    deadline = time.monotonic() + 60
    while not (
        ran := query(
            example_api.database,
            "SELECT count(*) FROM django_taskqueue_tasklog t JOIN auth_user u ON u.id = t.owner_id"
            " WHERE u.username = %s AND t.worker <> ''",
            user,
        )[0][0]
    ) and (time.monotonic() < deadline):
        time.sleep(1)
    if not ran:
        problems.append(f"the worker ran none of {user}'s tasks:\n{example_api.worker.log[-3000:]}")

    errors = server_errors(access_log)
    if errors:
        problems.append(
            f"the server logged {len(errors)} distinct 500s:\n\n" + "\n\n".join(errors.values())
        )
    if code != 0 or report.get("failures") or report.get("errors"):
        problems.append(
            f"schemathesis (as {user}) exited with {code}; reports in {tmp_path}\n"
            + failures_text(text)
        )
    assert not problems, "\n\n".join(problems)
