"""Developer and CI entry points: `nox -s tests` is the test command the README gives."""

from __future__ import annotations

import nox

nox.needs_version = ">=2024.4.15"
nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True

#: Every version the classifiers in pyproject.toml promise; `nox -s tests` runs each one it
#: finds (CI makes a missing one an error: `--error-on-missing-interpreters`).
PYTHON = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (everything but the end-to-end load tests), in parallel."""
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
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package and the load test (configuration in pyproject.toml)."""
    session.install("-e", ".[loadtest]", "mypy>=1.10", "types-psutil")
    session.run("mypy", "--strict", "vestige", "loadtest")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks that print figures (not tests): store throughput and gate fairness;
    search, smart_ingest, stats, doctor and cold start at 1k, 10k and 100k memories; then
    ``--attach``: spawn, proxied round trips and failover after a killed owner; then
    ``--feed``: ingest throughput with and without a subscribed client.

    Arguments before the first marker go to bench_store.py, those after ``--scale`` to
    bench_scale.py, those after ``--attach`` to bench_attach.py, those after ``--feed`` to
    bench_feed.py (in any order): ``nox -s bench -- --quick --scale --size 1000000
    --baseline-venv ../main/.venv/bin --attach --quick --feed --quick``.  The scale
    benchmark's stores are built once (100k: minutes) and cached under
    ``~/.cache/vestige-bench`` (``--cache-dir``); docs/BENCHMARKS.md says what each figure is.
    """
    session.install("-e", ".")
    parts: dict[str, list[str]] = {"": [], "--scale": [], "--attach": [], "--feed": []}
    part = ""
    for arg in session.posargs:
        if arg in parts:
            part = arg
        else:
            parts[part].append(arg)
    session.run("python", "tests/benchmarks/bench_store.py", *parts[""])
    session.run("python", "tests/benchmarks/bench_scale.py", *parts["--scale"])
    session.run("python", "tests/benchmarks/bench_attach.py", *parts["--attach"])
    session.run("python", "tests/benchmarks/bench_feed.py", *parts["--feed"])


@nox.session
def loadtest(session: nox.Session) -> None:
    """The multi-process load test (docs/LOADTEST.md).

    Without posargs: the load test's own tests first (a tiny end-to-end run; the CI bounds
    failing on an injected slow write path and passing beside busy loops), then the CI
    profile, then ``attach-ci`` (``vestige-mcp --attach`` clients, their owner killed -9), then
    ``feed-ci`` (a write through one server reaching a subscribed client of another).
    With posargs: `python -m loadtest POSARGS` only.
    """
    session.install("-e", ".[loadtest,test]")
    if session.posargs:
        session.run("python", "-m", "loadtest", *session.posargs)
        return
    session.run("pytest", "-m", "loadtest", "-p", "no:cacheprovider", "-rP", "--durations=5")
    session.run("python", "-m", "loadtest", "--profile", "ci")
    session.run("python", "-m", "loadtest", "--profile", "attach-ci")
    session.run("python", "-m", "loadtest", "--profile", "feed-ci")
