"""The README's two commands are exactly what CI runs."""

from __future__ import annotations

import re

from conftest import REPO


def _readme_command(marker: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- {marker} -->\s*```\n(.+?)\n```", text, re.S)
    assert m, f"README has no {marker} block"
    return m.group(1).strip()


def test_ci_runs_the_readme_commands():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    main, tests = _readme_command("main-command"), _readme_command("test-command")
    assert main in ci and tests in ci
    assert ci.index(main) < ci.index(tests)


def test_readme_names_the_zip_build_command():
    cmd = _readme_command("build-command")
    assert cmd == ".venv/bin/python scripts/build_extension.py"
    assert (REPO / "scripts" / "build_extension.py").is_file()
