"""Every management command refuses an out-of-range argument with a CommandError.

Before, a huge duration raised OverflowError (in ``timedelta`` or in
``now - duration``), a huge integer a database error once it reached a query,
and a negative ``--limit`` Django's "Negative indexing" ValueError; a zero or
negative ``--max-batches`` was silently accepted.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_taskqueue import housekeeping
from tests.live import ROOT

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999999"
BEAT = pytest.mark.skipif(
    importlib.util.find_spec("django_celery_beat") is None, reason="needs django-celery-beat"
)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("taskqueue_cleanup", ["--older-than", "999999d"], "too long: at most 36500 days"),
        ("taskqueue_cleanup", ["--older-than", "99999999999d"], "too long"),
        ("taskqueue_cleanup", ["--older-than", f"{HUGE}w"], "too long"),
        ("taskqueue_cleanup", ["--batch-size", HUGE], "not between 1 and 10000"),
        ("taskqueue_cleanup", ["--batch-size", "0"], "not between 1 and 10000"),
        ("taskqueue_cleanup", ["--max-batches", HUGE], "not between 1 and 1000000"),
        ("taskqueue_cleanup", ["--max-batches", "0"], "not between 1 and 1000000"),
        ("taskqueue_cleanup", ["--max-batches", "-5"], "not between 1 and 1000000"),
        ("taskqueue_cleanup", ["--max-batches", "x"], "'x' is not an integer"),
        ("taskqueue_stats", ["--window", "999999999d"], "too long"),
        ("taskqueue_stats", ["--top", HUGE], "not between 1 and 1000"),
        ("taskqueue_stats", ["--top", "-1"], "not between 1 and 1000"),
        ("taskqueue_check_stuck", ["--limit", HUGE], "not between 1 and 1000000"),
        ("taskqueue_check_stuck", ["--limit", "-1"], "not between 1 and 1000000"),
        ("taskqueue_check_stuck", ["--limit", "0"], "not between 1 and 1000000"),
        pytest.param(
            "taskqueue_beat_check", ["--grace", "99999999999999d"], "too long", marks=BEAT
        ),
        pytest.param("taskqueue_beat_check", ["--grace", "999999d"], "too long", marks=BEAT),
        pytest.param("taskqueue_beat_sync", ["--schedule", ".x"], "cannot import", marks=BEAT),
        pytest.param("taskqueue_beat_sync", ["--schedule", "os.getenv"], "failed", marks=BEAT),
    ],
)
def test_out_of_range_arguments_are_a_command_error(
    command: str, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command(command, *args, stdout=StringIO(), stderr=StringIO())


def test_the_longest_duration_still_works() -> None:
    out = StringIO()
    call_command("taskqueue_cleanup", "--older-than", "36500d", "--dry-run", stdout=out)
    assert "Dry run: 0 tasks would be deleted." in out.getvalue()
    call_command("taskqueue_stats", "--window", "36500d", "--top", "1000", stdout=StringIO())
    assert housekeeping.parse_duration("36500d") == housekeeping.MAX_DURATION


def test_from_the_command_line_it_is_a_usage_error(settings: Any) -> None:
    # argparse itself refuses it: the usage, the reason, exit status 2, no traceback.
    done = subprocess.run(
        [sys.executable, "-m", "django", "taskqueue_check_stuck", "--limit", HUGE],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"argument --limit: {HUGE} is not between 1 and 1000000" in done.stderr
    assert "Traceback" not in done.stderr
