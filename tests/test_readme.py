"""The README's set-up commands stay true (CI runs the test command)."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def setup_commands():
  text = (ROOT / "README.md").read_text()
  section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
  return [line.strip() for line in section.splitlines() if line.startswith("    python3 -m venv")]


def test_exactly_two_setup_commands_main_job_and_tests():
  main_job, tests = setup_commands()
  assert main_job.endswith(".venv/bin/python -m experiments reproduce") and "[experiments]" in main_job
  assert tests.endswith("python -m pytest -q") and "[test]" in tests


def test_ci_runs_the_readme_test_command():
  ci = (ROOT / ".ci" / "run").read_text()
  assert setup_commands()[1] in ci
  assert re.search(r"^set -euo pipefail$", ci, re.M)
