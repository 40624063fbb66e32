"""Every Python and shell block of the README and ``docs/`` runs, or is marked not runnable.

The rules (where each page runs, what each kind of block does, the ``norun`` marker) are
in ``tests/docs/runner.py``'s docstring and in ``docs/contributing.md``. One test per block,
named ``<file>:<line>``; the pages run lazily, once each, in subprocesses of their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if sys.version_info < (3, 11):  # the runner reads pyproject.toml with tomllib
    pytest.skip("needs Python 3.11+", allow_module_level=True)

from tests.docs import runner

# The docs install every extra (and Pillow, for the quickstart's task): where one is
# missing (the `minimal` env, Django 6.1 without django-celery-beat) the blocks cannot run.
for _module in ("rest_framework", "django_filters", "drf_spectacular", "django_celery_beat", "PIL"):
    pytest.importorskip(_module)

BLOCKS = runner.collect()


@pytest.fixture(scope="session")
def docs(tmp_path_factory: pytest.TempPathFactory) -> runner.DocsSession:
    return runner.DocsSession(tmp_path_factory.mktemp("docs"))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(docs: runner.DocsSession, block: runner.Block) -> None:
    outcome = docs.outcomes_of(block.page)[block.id]
    if outcome.error:
        pytest.fail(f"{block.id} ({block.lang}):\n{block.source}\n{outcome.error}", pytrace=False)


def test_quickstart_task_ran(docs: runner.DocsSession) -> None:
    """The quickstart, followed to the letter, ends with its task run by its worker."""
    project = docs.project_of("docs/quickstart.md")
    assert not any(o.error for o in docs.outcomes_of("docs/quickstart.md").values())
    code = textwrap.dedent(
        """
        import json, os, sys
        sys.path.insert(0, os.getcwd())
        os.environ["DJANGO_SETTINGS_MODULE"] = "proj.settings"
        import django
        django.setup()
        from django_taskqueue.models import TaskLog
        print(json.dumps([
            [t.task_name, t.status, t.progress, t.result]
            for t in TaskLog.objects.order_by("created_at")
        ]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        env=runner.subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    logs = json.loads(done.stdout.splitlines()[-1])
    assert logs, "the quickstart started no task"
    for name, status, progress, result in logs:
        assert name == "jobs.tasks.process_image"
        assert (status, progress) == ("completed", 100), logs
        assert result == {"width": 800, "height": 600}


# ------------------------------------------------------------------ the runner's own tests


def _page(tmp_path: Path, text: str) -> dict[str, runner.Outcome]:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "<!-- docs-test: fresh-project -->\n" + textwrap.dedent(text)
    )
    (tmp_path / "README.md").write_text("# nothing to run\n")
    session = runner.DocsSession(tmp_path / "work", root=tmp_path)
    (tmp_path / "work").mkdir()
    return session.outcomes_of("docs/page.md")


def test_a_failing_unmarked_block_fails_and_a_marked_one_is_not_run(tmp_path: Path) -> None:
    outcomes = _page(
        tmp_path,
        """
        ```python
        # settings.py
        DJANGO_TASKQUEUE = {"ALLOWED_FILE_ROOTS": [MEDIA_ROOT]}
        ```

        ```python
        undefined_name()
        ```

        <!-- docs-test: norun (shows the idea only) -->
        ```python
        undefined_name()
        ```

        ```bash
        python manage.py migrate_nothing
        ```

        ```python
        INSTALLED_APPS += ["rest_framework"]
        ```
        """,
    )
    errors = {bid.split(":")[1]: o.error for bid, o in outcomes.items()}
    assert "NameError: name 'MEDIA_ROOT' is not defined" in str(errors["3"])
    assert "NameError: name 'undefined_name' is not defined" in str(errors["8"])
    assert errors["13"] is None
    assert "Unknown command" in str(errors["17"])
    assert errors["21"] is None


def test_pip_lines_are_checked_against_pyproject() -> None:
    runner.check_pip_install(["pip", "install", "django-taskqueue[drf,beat,redis]"])
    runner.check_pip_install(["python", "-m", "pip", "install", "-e", ".[all]", "--group", "test"])
    with pytest.raises(AssertionError, match=r"'rest' is not in pyproject\.toml"):
        runner.check_pip_install(["pip", "install", "django-taskqueue[rest]"])
    with pytest.raises(AssertionError, match="no such group"):
        runner.check_pip_install(["pip", "install", "--group", "nothing"])


def test_a_marker_needs_a_reason() -> None:
    blocks = runner.parse_blocks("<!-- docs-test: norun -->\n```bash\nls\n```\n", "x.md")
    assert blocks[0].marker_error is not None
