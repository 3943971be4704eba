"""The README's two commands stay true: CI runs the same test command the README shows."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python3.11 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    assert command in readme and command in ci
    assert "python3.11 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/ohlcv demo" in readme


def test_ci_runs_the_tiers_the_default_run_leaves_out():
    """The cluster tier and the benchmark's smoke run are deselected by pyproject's addopts; CI
    must still run them, and the README must say how."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "-m 'not bench and not own_cluster'" in pyproject
    for tier in ("own_cluster", "bench"):
        assert f".venv/bin/python -m pytest -m {tier}\n" in ci, tier
        assert f".venv/bin/python -m pytest -m {tier} " in readme, tier
