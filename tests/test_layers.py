"""Architecture guard: imports point down only, and the pure layers import no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "mmdata"

# Rank of each top-level part of the package (ARCHITECTURE.md §1); a module may import its own
# part and parts of lower or equal rank, never a higher one.
RANK = {
    "types": 0,
    "errors": 0,
    "book": 1,
    "candles": 1,
    "exchanges": 2,
    "store": 3,
    "net": 4,
    "validate": 5,
    "record": 5,
    "replay": 5,
    "serve": 5,
    "history": 5,
    "sim": 5,
    "live": 5,
    "cli": 6,
    "__main__": 7,
    "__init__": 7,
}
PURE = {"types", "errors", "book", "candles", "exchanges"}
IO_MODULES = {"websockets", "requests", "socket", "asyncio", "aiohttp", "urllib3", "http"}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _part(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_every_part_has_a_rank() -> None:
    assert {_part(p) for p in _modules()} <= set(RANK)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    part = _part(path)
    for name in _imports(path):
        if not name.startswith("mmdata."):
            continue
        target = name.split(".")[1]
        assert RANK[target] <= RANK[part], f"{path.relative_to(SRC)} ({part}) imports upward: {name}"


@pytest.mark.parametrize(
    "path", [p for p in _modules() if _part(p) in PURE], ids=lambda p: str(p.relative_to(SRC))
)
def test_pure_layers_do_no_io(path: Path) -> None:
    for name in _imports(path):
        assert name.split(".")[0] not in IO_MODULES, f"{path.relative_to(SRC)} imports {name}"
    source = path.read_text(encoding="utf-8")
    assert "open(" not in source.replace("open_capture(", ""), f"{path.relative_to(SRC)} opens files"
