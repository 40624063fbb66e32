"""The README's test command is what CI runs, and CI runs tox's default environments."""

from __future__ import annotations

from tests.docs import runner


def test_readme_test_command_is_ci_entry_point() -> None:
    text = (runner.ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Run the tests") :]
    first = runner.parse_blocks(section, "README.md")[0]
    assert first.source.strip() == "bash .ci/run"
    ci = (runner.ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.startswith("#")]
    assert commands[-1] == "python3 -m tox", "CI's last command runs tox's env_list"


def test_pip_is_upgraded_before_group() -> None:
    """``pip install --group`` needs pip 25.1: a page upgrades pip before it first uses it."""
    upgraded: set[str] = set()
    for block in runner.collect():
        if block.is_python:
            continue
        for command, _ in runner.shell_commands(block):
            if 'install --upgrade "pip>=25.1"' in command:
                upgraded.add(block.page)
            elif "install" in command and "--group" in command:
                assert block.page in upgraded, f"{block.id}: {command}"
