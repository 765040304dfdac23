"""Threads, stopping, callbacks and subscription changes of the live streams."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from mmdata.errors import ConfigError
from mmdata.live import BookStream, CandleStream, TradeStream
from mmdata.net.ws import WsConfig
from mmdata.types import Candle, Trade
from tests.live.helpers import FAST, SPEED, gather, wait_for
from tests.live.simthread import SimThread

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_stop_during_backoff_returns_promptly() -> None:
    # Nothing listens there: every connect fails and the stream waits 2.5-5 s before the next.
    slow = WsConfig(backoff_base_s=5.0, backoff_cap_s=10.0, open_timeout_s=2.0)
    stream = TradeStream("kraken", url=f"ws://127.0.0.1:{_free_port()}/v2", ws_config=slow)
    stream.subscribe("BTC/USD")
    stream.start()
    wait_for(lambda: stream.stats.errors >= 1, 5, "a failed connect")
    time.sleep(0.2)  # well inside the backoff wait
    started = time.monotonic()
    stream.stop()
    assert time.monotonic() - started < 1.0
    assert not stream.running and not stream.connected
    assert stream.stats.connects == 0
    stream.stop()  # idempotent


def test_stop_while_connected_is_prompt_and_wakes_waiting_readers() -> None:
    with SimThread("binance", ["BTCUSDT"], rate=5) as sim:
        stream = TradeStream("binance", url=sim.url, ws_config=FAST)
        stream.subscribe("BTCUSDT")
        stream.start()
        wait_for(lambda: stream.connected, 5, "connected")
        stream.get_trade_updates(0)
        batches: list[int] = []

        def read_until_stopped() -> None:
            # get_trade_updates(None) blocks for the next trades; it returns [] only once stopped.
            while batch := stream.get_trade_updates(None):
                batches.append(len(batch))

        reader = threading.Thread(target=read_until_stopped)
        reader.start()
        wait_for(lambda: bool(batches), 5, "trades read")
        started = time.monotonic()
        stream.stop()
        reader.join(2)
        assert not reader.is_alive() and time.monotonic() - started < 2.0
        assert not stream.connected and not stream.running


def test_callback_that_raises_does_not_kill_the_stream() -> None:
    seen: list[Candle] = []

    def boom(candle: Candle) -> None:
        raise RuntimeError("user bug")

    with SimThread("binance", ["BTCUSDT"], speed=SPEED) as sim:
        with CandleStream("binance", url=sim.url, ws_config=FAST) as stream:
            stream.subscribe("BTCUSDT", "1m", callback=boom)
            stream.subscribe("BTCUSDT", "1m", callback=seen.append)  # same subscription, second callback
            wait_for(lambda: stream.stats.callback_errors >= 5, 8, "five callback errors")
            assert stream.get_candle_updates(1)  # the queue still fills
            assert stream.connected and stream.stats.reconnects == 0
        # Every candle went to both callbacks: the one after the failing one still ran.
        assert stream.stats.callback_errors == len(seen) == stream.stats.delivered


def test_subscribe_and_unsubscribe_from_other_threads_while_running() -> None:
    with SimThread("binance", SYMBOLS, speed=SPEED) as sim:
        stream = CandleStream("binance", url=sim.url, ws_config=FAST)
        stream.subscribe("BTCUSDT", "1m")  # before start
        with stream:
            wait_for(lambda: stream.connected, 5, "connected")
            barrier = threading.Barrier(3)

            def subscribe(symbol: str) -> None:
                barrier.wait()
                stream.subscribe(symbol, "1m")

            workers = [threading.Thread(target=subscribe, args=(s,)) for s in SYMBOLS[1:]]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            assert stream.subscriptions()[0] == ("BTCUSDT", "1m")
            assert sorted(stream.subscriptions()) == sorted((s, "1m") for s in SYMBOLS)

            def every_symbol(got: list[Candle]) -> bool:
                return {c.symbol for c in got} == set(SYMBOLS)

            gather(stream.get_candle_updates, every_symbol, timeout=6)
            assert stream.stats.connects == 1  # subscribed on the live connection, no reconnect

            remover = threading.Thread(target=stream.unsubscribe, args=("ETH/USDT", "1m"))
            remover.start()
            remover.join()
            time.sleep(0.5)  # the UNSUBSCRIBE reaches the venue
            stream.get_candle_updates(0)
            later = gather(stream.get_candle_updates, lambda got: len(got) >= 6, timeout=6)
            assert "ETHUSDT" not in {c.symbol for c in later}
            assert {c.symbol for c in later} == {"BTCUSDT", "SOLUSDT", "BNBUSDT"}
        assert stream.unsubscribe("ETHUSDT", "1m") is False


def test_connects_only_once_something_is_subscribed_and_restarts() -> None:
    with SimThread("kraken", ["BTC/USD"], rate=3) as sim:
        stream = TradeStream("kraken", url=sim.url, ws_config=FAST)
        stream.start()
        stream.start()  # no-op while running
        time.sleep(0.3)
        assert not stream.connected and stream.stats.connects == 0
        stream.subscribe("btc-usd")
        wait_for(lambda: stream.connected, 5, "connected after the first subscribe")
        assert gather(stream.get_trade_updates, lambda got: len(got) >= 2, timeout=6)
        stream.stop()
        stream.start()  # a stopped stream can be started again, subscriptions kept
        assert gather(stream.get_trade_updates, lambda got: len(got) >= 2, timeout=6)
        assert stream.stats.connects == 2
        stream.stop()


def test_queue_bound_and_callback_only_use() -> None:
    got: list[Trade] = []
    with SimThread("bitfinex", ["tBTCUSD"], rate=5) as sim:
        with TradeStream("bitfinex", url=sim.url, ws_config=FAST, queue_size=0) as stream:
            stream.subscribe("BTC/USD", callback=got.append)
            wait_for(lambda: len(got) >= 5, 6, "five trades")
            assert stream.get_trade_updates(0) == []  # no queue: callbacks only
        with TradeStream("bitfinex", url=sim.url, ws_config=FAST, queue_size=3) as stream:
            stream.subscribe("BTC/USD")
            wait_for(lambda: stream.stats.delivered >= 6, 6, "six trades")
            kept = stream.get_trade_updates(0)
            assert 1 <= len(kept) <= 3 and stream.stats.dropped >= 3


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda: CandleStream("binance"), lambda s: s.subscribe("BTCUSDT", "2m")),
        (lambda: CandleStream("bitfinex"), lambda s: s.subscribe("BTC/USD", "4h")),
        (lambda: CandleStream("kraken"), lambda s: s.subscribe("BTCUSD", "1m")),  # Kraken needs BASE/QUOTE
        (lambda: TradeStream("nasdaq"), lambda s: None),
        (lambda: BookStream("kraken", depth=20), lambda s: s.subscribe("BTC/USD")),
        (lambda: BookStream("binance", levels=0), lambda s: None),
        (lambda: BookStream("binance", depth=6000), lambda s: None),
        (lambda: TradeStream("kraken", queue_size=-1), lambda s: None),
    ],
)
def test_bad_arguments_raise_config_error(make: object, bad: object) -> None:
    with pytest.raises(ConfigError):
        stream = make()  # type: ignore[operator]
        bad(stream)  # type: ignore[operator]
