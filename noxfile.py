"""Developer and CI entry points: `nox -s tests` is the test command the README gives."""

from __future__ import annotations

import nox

nox.needs_version = ">=2024.4.15"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True

PYTHON = ["3.11", "3.12", "3.13"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (everything but the end-to-end load test), in parallel."""
    session.install("-e", ".[test]")
    session.run("python", "-c", "import apsw; print('SQLite', apsw.sqlite_lib_version())")
    args = session.posargs or ["-n", "auto", "--durations=10"]
    session.run("pytest", "-m", "not loadtest", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format --check and ruff check (installed from PyPI)."""
    session.install("ruff>=0.6")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks that print figures (not tests): store throughput, gate fairness, server RTT."""
    session.install("-e", ".")
    session.run("python", "tests/benchmarks/bench_store.py", *session.posargs)


@nox.session
def loadtest(session: nox.Session) -> None:
    """The multi-process load test (docs/LOADTEST.md); the CI profile unless posargs say else."""
    session.install("-e", ".[loadtest]")
    session.run("python", "-m", "loadtest", *(session.posargs or ["--profile", "ci"]))
