"""mmdata: record, verify, replay and serve crypto Level-2 order books and trades.

Layers (imports point down only): ``cli`` → ``validate``/``record``/``serve`` → ``net`` →
``store`` → ``exchanges`` → ``book`` → ``types``/``errors``. See docs/ and the shared
ARCHITECTURE.md.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
