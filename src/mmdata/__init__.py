"""mmdata: record, verify, replay and serve crypto Level-2 order books and trades.

Layers (imports point down only): ``cli`` → ``validate``/``record``/``serve`` → ``net`` →
``store`` → ``exchanges`` → ``book`` → ``types``/``errors``. See docs/ and the shared
ARCHITECTURE.md.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "open_data", "open_day"]

if TYPE_CHECKING:
    from mmdata.replay import open_data, open_day


def __getattr__(name: str) -> Any:
    # The notebook entry points import pandas/pyarrow: load them on first use only, so that
    # `import mmdata` (and the recorder) stays light.
    if name in ("open_day", "open_data"):
        from mmdata import replay  # noqa: PLC0415 - deliberately lazy

        return getattr(replay, name)
    raise AttributeError(f"module 'mmdata' has no attribute {name!r}")
