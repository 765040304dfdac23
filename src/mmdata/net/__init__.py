"""Network I/O: the only layer that touches sockets (ARCHITECTURE.md §1).

* :mod:`mmdata.net.backoff` — capped exponential backoff delays with jitter.
* :mod:`mmdata.net.http` — blocking REST client: retries, 418/429 handling, Binance weight budget.
* :mod:`mmdata.net.ws` — WebSocket connections and the reconnect loop.

Every foreign exception (``requests``, ``websockets``, ``OSError``, bad-URL ``ValueError``)
is mapped here onto :mod:`mmdata.errors` — :class:`~mmdata.errors.ConnectionFailed`,
:class:`~mmdata.errors.ConnectionLost`, :class:`~mmdata.errors.HttpError`,
:class:`~mmdata.errors.RateLimited` — so layers above catch mmdata errors only.
"""

from mmdata.net.backoff import backoff
from mmdata.net.http import HttpClient, HttpResponse, parse_retry_after
from mmdata.net.ws import WsConfig, WsConnection, connect, reconnecting

__all__ = [
    "HttpClient",
    "HttpResponse",
    "WsConfig",
    "WsConnection",
    "backoff",
    "connect",
    "parse_retry_after",
    "reconnecting",
]
