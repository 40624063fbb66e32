"""Check the built wheel and sdist of django-taskqueue before they are published.

Usage: python scripts/check_wheel.py DIST_DIR

DIST_DIR must hold exactly one wheel and one sdist (``python -m build`` writes both).
The wheel must carry the files Django needs at run time that setuptools only ships when
told to (``py.typed``, the migrations), and nothing but the package and its metadata.
The sdist must carry what rebuilding and testing needs. Prints every check; exits 1 if
any fails.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

PACKAGE = "django_taskqueue"

WHEEL_REQUIRED = (
    f"{PACKAGE}/__init__.py",
    f"{PACKAGE}/py.typed",
    f"{PACKAGE}/migrations/__init__.py",
    f"{PACKAGE}/migrations/0001_initial.py",
    f"{PACKAGE}/contrib/postgres/migrations/__init__.py",
    f"{PACKAGE}/contrib/postgres/migrations/0001_trigram_search.py",
)
# Top-level folders of the repository that must never end up installed.
WHEEL_FORBIDDEN_TOP = ("tests", "example_project", "benchmarks", "docs", "scripts")

SDIST_REQUIRED = (
    "pyproject.toml",
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    f"{PACKAGE}/py.typed",
    f"{PACKAGE}/migrations/0001_initial.py",
    f"{PACKAGE}/contrib/postgres/migrations/0001_trigram_search.py",
)
# Build and tool leftovers that must not leak into the sdist.
SDIST_FORBIDDEN_PARTS = (
    ".venv",
    ".tox",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "_build",
    ".git",
)


class Checker:
    def __init__(self) -> None:
        self.failures = 0

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures += 1


def only_one(dist_dir: Path, pattern: str) -> Path:
    found = sorted(dist_dir.glob(pattern))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        sys.exit(f"expected exactly one {pattern} in {dist_dir}, found: {names}")
    return found[0]


def check_wheel(wheel: Path, checker: Checker) -> None:
    print(f"wheel: {wheel.name}")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = [n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")]
        metadata = ""
        if dist_info:
            metadata = zf.read(f"{dist_info[0]}/METADATA").decode("utf-8")
    present = set(names)
    for required in WHEEL_REQUIRED:
        checker.check(required in present, f"contains {required}")
    tops = {PurePosixPath(n).parts[0] for n in names}
    for top in WHEEL_FORBIDDEN_TOP:
        checker.check(top not in tops, f"contains nothing from {top}/")
    unexpected = sorted(t for t in tops if t != PACKAGE and not t.endswith(".dist-info"))
    checker.check(not unexpected, f"holds only {PACKAGE}/ and its .dist-info (extra: {unexpected})")
    pyc = [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
    checker.check(not pyc, f"no compiled files ({len(pyc)} found)")
    checker.check("License-Expression: MIT" in metadata, "METADATA has License-Expression: MIT")
    checker.check("License-File: LICENSE" in metadata, "METADATA has License-File: LICENSE")
    licence = f"{dist_info[0]}/licenses/LICENSE" if dist_info else "<no .dist-info>"
    checker.check(licence in present, f"contains {licence}")
    print(f"  ({len(names)} files in the wheel)")


def check_sdist(sdist: Path, checker: Checker) -> None:
    print(f"sdist: {sdist.name}")
    with tarfile.open(sdist) as tf:
        members = [m.name for m in tf.getmembers() if m.isfile()]
    # Every member sits under "<name>-<version>/".
    relative = {str(PurePosixPath(*PurePosixPath(m).parts[1:])) for m in members}
    for required in SDIST_REQUIRED:
        checker.check(required in relative, f"contains {required}")
    leaked = sorted(
        r for r in relative if any(part in SDIST_FORBIDDEN_PARTS for part in PurePosixPath(r).parts)
    )
    checker.check(not leaked, f"no build or tool leftovers (found: {leaked[:5]})")
    print(f"  ({len(relative)} files in the sdist)")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    dist_dir = Path(argv[1])
    checker = Checker()
    check_wheel(only_one(dist_dir, "*.whl"), checker)
    check_sdist(only_one(dist_dir, "*.tar.gz"), checker)
    if checker.failures:
        print(f"{checker.failures} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
