"""Synchronous REST client on ``requests``: retries, venue rate limits, error mapping.

The recorder fetches snapshots and instrument lists rarely, so the client is plain
blocking code (run via :func:`asyncio.to_thread`) with every wait going through the
injected ``sleep``/``clock``/``wall`` callables, which makes the policy testable without
real waiting.

:meth:`HttpClient.send` in order:

1. **Ban.** After an HTTP 418 (Binance: IP banned) ``banned_until`` holds the
   ``clock()`` time the ban ends, and every send first waits it out.
2. **Weight budget.** With ``weight_limit_1m`` set, the last ``X-MBX-USED-WEIGHT-1M``
   header is remembered; if it was seen in the current wall-clock minute and this
   request's weight would exceed the limit, wait for the next minute boundary (Binance
   counts weight in fixed wall-clock minutes).
3. **Attempt.** 2xx returns an :class:`HttpResponse`. Any other 4xx (bar 418/429) and
   3xx are the caller's fault and raise :class:`~mmdata.errors.HttpError` at once. 429,
   418, 5xx, connection errors and timeouts are retried up to ``retries`` times,
   waiting the server's ``Retry-After`` (seconds or HTTP-date) when given, else the next
   :func:`~mmdata.net.backoff.backoff` delay (clamped to ``max_wait_s``).

Any wait the server demands (ban, Retry-After, weight) that is longer than
``max_wait_s`` is not slept: :class:`~mmdata.errors.RateLimited` is raised with
``retry_after`` so the caller can reschedule. Exhausted retries raise ``RateLimited``
for 429/418, :class:`~mmdata.errors.ConnectionFailed` when the server could not be
reached and ``HttpError`` otherwise. No foreign exception leaves :meth:`HttpClient.send`.

``on_event(kind, data)`` reports ``"retry"``, ``"ban"``, ``"weight_wait"`` and
``"rate_limited"`` so the recorder can write them into its ledger.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from types import TracebackType
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict

from mmdata.errors import ConfigError, ConnectionFailed, HttpError, MMDataError, RateLimited
from mmdata.net.backoff import backoff
from mmdata.types import HttpRequest

__all__ = ["WEIGHT_HEADER", "HttpClient", "HttpResponse", "parse_retry_after"]

#: Binance's running request-weight total for the current minute.
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"

_BODY_PREFIX = 512

# Request errors that say nothing reached the server: retried, and finally ConnectionFailed.
_CONNECT_ERRORS = (requests.exceptions.ConnectTimeout, requests.exceptions.ConnectionError)
# Malformed requests (bad URL, method, header): retrying cannot help.
_REQUEST_ERRORS = (
    requests.exceptions.URLRequired,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidJSONError,
    requests.exceptions.TooManyRedirects,
    ValueError,  # http.client: control characters in method/URL; idna: bad host labels
)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A successful (2xx) response; ``attempts`` counts the HTTP attempts it took."""

    status: int
    text: str
    headers: Mapping[str, str]  # case-insensitive
    url: str
    elapsed_s: float  # duration of the successful attempt (clock seconds)
    attempts: int


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date
    (relative to ``now_wall``, epoch seconds). ``None`` for a missing or unusable value.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_wall)


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, final: MMDataError, *, status: int | None, retry_after: float | None) -> None:
        super().__init__(str(final))
        self.final = final  # what to raise once retries are exhausted
        self.status = status
        self.retry_after = retry_after


class HttpClient:
    """Blocking HTTP client with retry, backoff, ban and weight-budget handling.

    ``used_weight`` is the last ``X-MBX-USED-WEIGHT-1M`` seen (``None`` before any);
    ``banned_until`` the ``clock()`` time a 418 ban ends (``None`` if never banned).
    Safe to share between threads: its state is a few atomically replaced attributes
    (a race only makes one decision slightly stale). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        weight_limit_1m: int | None = None,
        max_wait_s: float = 120.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ConfigError(f"timeout_s must be a positive number, got {timeout_s}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if weight_limit_1m is not None and weight_limit_1m <= 0:
            raise ConfigError(f"weight_limit_1m must be > 0, got {weight_limit_1m}")
        if not max_wait_s >= 0:
            raise ConfigError(f"max_wait_s must be >= 0, got {max_wait_s}")
        backoff(backoff_base_s, backoff_cap_s)  # validates the pair now, not at the first retry
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.weight_limit_1m = weight_limit_1m
        self.max_wait_s = max_wait_s
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._rng = rng if rng is not None else random.Random()
        self._on_event = on_event
        self.used_weight: int | None = None
        self._weight_minute: int | None = None  # wall-clock minute the weight header was seen in
        self.banned_until: float | None = None

    # -- public ------------------------------------------------------------------------

    def send(self, request: HttpRequest) -> HttpResponse:
        """Send ``request`` (method, url, params), retrying per the module's policy.

        Raises :class:`~mmdata.errors.HttpError`, :class:`~mmdata.errors.RateLimited`,
        :class:`~mmdata.errors.ConnectionFailed` (all :class:`~mmdata.errors.MMDataError`).
        """
        delays = backoff(self.backoff_base_s, self.backoff_cap_s, rng=self._rng)
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_ban(request.url)
            self._wait_for_weight(request)
            try:
                return self._attempt(request, attempt)
            except _Retryable as failure:
                if attempt > self.retries:
                    if isinstance(failure.final, RateLimited):
                        self._event(
                            "rate_limited",
                            url=request.url,
                            status=failure.status,
                            retry_after=failure.retry_after,
                            reason="retries",
                        )
                    raise failure.final from failure.final.__cause__
                if failure.status == 418:
                    planned = self._ban_remaining()
                    wait = 0.0  # slept by the ban wait at the top of the loop
                elif failure.retry_after is not None:
                    planned = wait = failure.retry_after
                else:
                    # our own backoff, not a server demand: clamp rather than give up
                    planned = wait = min(next(delays), self.max_wait_s)
                self._check_wait(planned, status=failure.status, url=request.url, cause=failure.final)
                self._event(
                    "retry",
                    url=request.url,
                    attempt=attempt,
                    status=failure.status,
                    error=str(failure.final),
                    wait_s=planned,
                )
                if wait > 0:
                    self._sleep(wait)

    def close(self) -> None:
        """Close the underlying session if this client created it."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- one attempt -------------------------------------------------------------------

    def _attempt(self, request: HttpRequest, attempt: int) -> HttpResponse:
        url = request.url
        started = self._clock()
        try:
            response = self._session.request(
                request.method, url, params=list(request.params), timeout=self.timeout_s
            )
            text = response.text
        except _CONNECT_ERRORS as exc:
            final: MMDataError = ConnectionFailed(f"cannot connect to {url}: {exc}", url=url)
            final.__cause__ = exc
            raise _Retryable(final, status=None, retry_after=None) from exc
        except requests.exceptions.Timeout as exc:
            final = HttpError(f"timed out after {self.timeout_s}s: {url}", url=url)
            final.__cause__ = exc
            raise _Retryable(final, status=None, retry_after=None) from exc
        except _REQUEST_ERRORS as exc:
            raise HttpError(f"bad request {request.method} {url}: {exc}", url=url) from exc
        except (requests.RequestException, OSError) as exc:  # garbled body, stray transport failure
            final = HttpError(f"request failed: {url}: {exc}", url=url)
            final.__cause__ = exc
            raise _Retryable(final, status=None, retry_after=None) from exc
        except Exception as exc:  # the boundary promise: nothing foreign escapes, even the unforeseen
            raise HttpError(f"request failed unexpectedly: {url}: {exc!r}", url=url) from exc
        elapsed = self._clock() - started
        status = response.status_code
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(response.headers)
        self._note_weight(headers.get(WEIGHT_HEADER))
        if 200 <= status < 300:
            return HttpResponse(status, text, headers, response.url or url, elapsed, attempt)
        retry_after = parse_retry_after(headers.get("Retry-After"), self._wall())
        if status in (418, 429):
            if status == 418:
                # without Retry-After assume the longest backoff: a ban is never short
                wait = retry_after if retry_after is not None else self.backoff_cap_s
                self.banned_until = self._clock() + wait
                self._event("ban", url=url, status=418, wait_s=wait, until=self.banned_until)
            limited = RateLimited(f"HTTP {status} from {url}", status=status, retry_after=retry_after)
            raise _Retryable(limited, status=status, retry_after=retry_after)
        error = HttpError(f"HTTP {status} from {url}", status=status, url=url, body=text)
        if status >= 500:
            raise _Retryable(error, status=status, retry_after=retry_after)
        raise error

    # -- waits -------------------------------------------------------------------------

    def _ban_remaining(self) -> float:
        if self.banned_until is None:
            return 0.0
        return max(0.0, self.banned_until - self._clock())

    def _wait_for_ban(self, url: str) -> None:
        remaining = self._ban_remaining()
        if remaining <= 0:
            return
        self._check_wait(remaining, status=418, url=url)
        self._event("ban", url=url, status=418, wait_s=remaining, until=self.banned_until, waiting=True)
        self._sleep(remaining)

    def _note_weight(self, value: str | None) -> None:
        if value is None:
            return
        try:
            used = int(value.strip())
        except ValueError:
            return  # a garbled header must not break the request
        self.used_weight = used
        self._weight_minute = int(self._wall() // 60)

    def _wait_for_weight(self, request: HttpRequest) -> None:
        limit = self.weight_limit_1m
        if limit is None or self.used_weight is None or self.used_weight + request.weight <= limit:
            return
        now = self._wall()
        if self._weight_minute != int(now // 60):
            return  # the count belongs to an earlier minute, which has already reset
        wait = 60.0 - now % 60
        self._check_wait(wait, status=429, url=request.url)
        self._event(
            "weight_wait",
            url=request.url,
            used_weight=self.used_weight,
            weight=request.weight,
            limit=limit,
            wait_s=wait,
        )
        self._sleep(wait)

    def _check_wait(
        self, wait: float, *, status: int | None, url: str, cause: BaseException | None = None
    ) -> None:
        if wait <= self.max_wait_s:
            return
        self._event("rate_limited", url=url, status=status, retry_after=wait, reason="max_wait")
        raise RateLimited(
            f"must wait {wait:.1f}s (> max_wait_s {self.max_wait_s}) before {url}",
            status=status if status is not None else 0,
            retry_after=wait,
        ) from cause

    def _event(self, kind: str, **data: Any) -> None:
        if self._on_event is not None:
            self._on_event(kind, data)
