"""Developer sessions: `nox -s tests` (the suite CI runs), `lint`, `typecheck`, `bench`, `soak`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (slow soak tests excluded), in parallel on every core."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "auto", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Long-running tests marked `slow`."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "slow", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, each reported as a ratio to a baseline measured in the same run."""
    session.install("-e", ".")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def load(session: nox.Session) -> None:
    """Load tests (bounded; not in the defaults): relay (1,000 clients on one symbol), candle server
    (1,000 clients over 20 rooms), stream server (1,000 on price_updates). `nox -s load -- candles`
    runs one; other arguments go to the scripts."""
    session.install("-e", ".")
    names = ("relay", "candles", "stream")
    picked = [a for a in session.posargs if a in names] or list(names)
    rest = [a for a in session.posargs if a not in names]
    if "relay" in picked:
        session.run("python", "benchmarks/load_relay.py", *rest)
    serve2 = [n for n in picked if n != "relay"]
    if serve2:
        session.run("python", "benchmarks/load_serve2.py", "--scenario", *serve2, *rest)
