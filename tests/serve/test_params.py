"""Hostile query parameters never reach a path outside the data root; each gets a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdata.serve.params import MAX_VALUE_CHARS, BadRequest, parse_int, parse_query, resolve_stream


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for venue, fs in (("binance", "BTCUSDT"), ("kraken", "BTCUSD"), ("bitfinex", "tBTCUSD")):
        (root / venue / fs / "20261121").mkdir(parents=True)
    (tmp_path / "secret").mkdir()  # beside the data root: must never be reachable
    return root


def resolve(data: Path, path: str):  # type: ignore[no-untyped-def]
    params = parse_query(path)
    return resolve_stream(data, params.get("exchange"), params.get("symbol"))


@pytest.mark.parametrize(
    ("query", "fs"),
    [
        ("exchange=binance&symbol=BTCUSDT", "BTCUSDT"),
        ("exchange=KRAKEN&symbol=BTC/USD", "BTCUSD"),
        ("exchange=kraken&symbol=BTC%2FUSD", "BTCUSD"),
        ("exchange=kraken&symbol=btc-usd", "BTCUSD"),
        ("exchange=bitfinex&symbol=tBTCUSD", "tBTCUSD"),
        ("exchange=bitfinex&symbol=TBTCUSD", "tBTCUSD"),
    ],
)
def test_known_streams_resolve_to_their_folder(data: Path, query: str, fs: str) -> None:
    stream = resolve(data, f"/snapshot?{query}")
    assert stream.symbol_fs == fs and stream.root.parent.parent == data and stream.root.is_dir()


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("symbol=BTCUSDT", 400, "exchange is required"),
        ("exchange=binance", 400, "symbol is required"),
        ("exchange=coinbase&symbol=BTCUSD", 400, "unknown exchange"),
        ("exchange=../kraken&symbol=BTCUSD", 400, "unknown exchange"),
        ("exchange=binance&symbol=../secret", 400, "is not a symbol"),
        ("exchange=binance&symbol=..%2F..%2Fsecret", 400, "is not a symbol"),
        ("exchange=binance&symbol=%2e%2e%2fsecret", 400, "is not a symbol"),
        ("exchange=binance&symbol=..%252F..%252Fsecret", 400, "is not a symbol"),
        ("exchange=binance&symbol=..%5Csecret", 400, "is not a symbol"),
        ("exchange=binance&symbol=/etc/passwd", 404, "no recorded data"),
        ("exchange=binance&symbol=secret", 404, "no recorded data"),
        ("exchange=binance&symbol=BTC%00USDT", 400, "printable ASCII"),
        ("exchange=binance&symbol=BTC%C3%A9USDT", 400, "printable ASCII"),
        ("exchange=binance&symbol=BTC%FFUSDT", 400, "malformed query"),
        (f"exchange=binance&symbol={'A' * (MAX_VALUE_CHARS + 1)}", 400, "too long"),
        ("exchange=binance&symbol=" + "B" * 40, 400, "is not a symbol"),
        ("exchange=binance&symbol=ETHUSDT", 404, "no recorded data"),
        ("exchange=binance&symbol=", 400, "symbol is required"),
        ("&".join(f"k{i}=v" for i in range(40)), 400, "too many fields"),
    ],
)
def test_hostile_values_get_a_status_and_a_message(data: Path, query: str, status: int, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        resolve(data, f"/ws?{query}")
    assert err.value.status == status and message in err.value.message
    assert "\x00" not in err.value.message and err.value.message.isascii()


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", 10),
        ("5", 5),
        ("5000", 5000),
        ("0", None),
        ("5001", None),
        ("-1", None),
        ("1e3", None),
        ("x", None),
    ],
)
def test_integer_parameters(value: str, ok: int | None) -> None:
    params = {"levels": value}
    if ok is None:
        with pytest.raises(BadRequest, match="levels must be an integer from 1 to 5000"):
            parse_int(params, "levels", 10, 1, 5000)
    else:
        assert parse_int(params, "levels", 10, 1, 5000) == ok
