"""Every public name is exported, importable and documented; the error tree is one tree."""

from __future__ import annotations

import importlib
import inspect

import pytest

from mmdata import errors

PUBLIC_MODULES = [
    "mmdata.types",
    "mmdata.errors",
    "mmdata.book",
    "mmdata.book.orderbook",
    "mmdata.book.checksum",
    "mmdata.book.sync",
    "mmdata.exchanges",
    "mmdata.exchanges.base",
    "mmdata.exchanges.binance",
    "mmdata.exchanges.kraken",
    "mmdata.exchanges.bitfinex",
    "mmdata.exchanges.history",
    "mmdata.candles.combine",
    "mmdata.history",
    "mmdata.history.store",
    "mmdata.history.fetch",
    "mmdata.history.join",
    "mmdata.history.local",
    "mmdata.store",
    "mmdata.store.capture",
    "mmdata.net",
    "mmdata.net.backoff",
    "mmdata.net.http",
    "mmdata.net.ws",
    "mmdata.store.gzmembers",
    "mmdata.store.writers",
    "mmdata.record.window",
    "mmdata.validate",
    "mmdata.validate.day",
    "mmdata.validate.steps",
    "mmdata.store.dayfolder",
    "mmdata.store.layout",
    "mmdata.replay",
    "mmdata.replay.day",
    "mmdata.replay.data",
    "mmdata.replay.tables",
    "mmdata.replay.timeparse",
    "mmdata.replay.output",
    "mmdata.replay.export",
    "mmdata.store.tail",
    "mmdata.serve.params",
    "mmdata.serve.follow",
    "mmdata.serve.sources",
    "mmdata.serve.hub",
    "mmdata.serve.relay",
    "mmdata.serve.app",
    "mmdata.serve.client",
    "mmdata.serve.market",
    "mmdata.serve.candles",
    "mmdata.serve.stream",
    "mmdata.serve.metrics",
    "mmdata.candles",
    "mmdata.candles.intervals",
    "mmdata.candles.aggregate",
    "mmdata.candles.metrics",
    "mmdata.live",
    "mmdata.live.base",
    "mmdata.live.candles",
    "mmdata.live.trades",
    "mmdata.live.book",
]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_names_exist_and_are_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__ and module.__doc__.strip(), f"{module_name} has no module docstring"
    names = getattr(module, "__all__", None)
    if names is None:
        pytest.skip(f"{module_name} defines no __all__")
    for name in names:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__ and obj.__doc__.strip(), f"{module_name}.{name} has no docstring"


def test_error_tree_has_one_root() -> None:
    classes = [
        obj for _, obj in inspect.getmembers(errors, inspect.isclass) if obj.__module__ == errors.__name__
    ]
    assert len(classes) == len(errors.__all__)
    for cls in classes:
        assert issubclass(cls, errors.MMDataError)
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the drawn tree"


def test_structured_error_attributes() -> None:
    gap = errors.SequenceGap(symbol="BTCUSDT", expected=10, got=12)
    assert (gap.symbol, gap.expected, gap.got) == ("BTCUSDT", 10, 12)
    assert "expected 10, got 12" in str(gap)
    mismatch = errors.ChecksumMismatch(symbol="BTC/USD", expected=1, got=2)
    assert isinstance(mismatch, errors.BookSyncError)
    limited = errors.RateLimited("slow down", status=429, retry_after=3.0)
    assert limited.retry_after == 3.0 and isinstance(limited, errors.ExchangeError)
