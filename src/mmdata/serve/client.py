"""Client side of the relay: rebuild the book from ``snapshot`` + ``diff`` messages.

:class:`RelayBook` feeds the messages to the venue's own sync engine (through a
:class:`~mmdata.serve.follow.BookFollower`), so a client's book is checked the way the
recorder's was: Kraken and Bitfinex checksums, Binance ``U``/``u`` continuity. A relay
``snapshot`` message restates a book (the server's followed book on connect, or a
recorded snapshot in the stream); ``diff`` messages carry the recorded rows; ``event``
messages carry the resets (reconnects, restarts) a follower must apply. No I/O here.
"""

from __future__ import annotations

from typing import Any

from mmdata.serve.follow import BookFollower, Item

__all__ = ["RelayBook"]


class RelayBook:
    """The book of one relay stream, rebuilt from its messages (dicts as received)."""

    def __init__(self) -> None:
        self.follower: BookFollower | None = None
        self.messages = 0
        self.last_seq = -1

    def apply(self, message: dict[str, Any]) -> None:
        """Apply one relay message (status and trade messages change nothing)."""
        self.messages += 1
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(data, dict) or kind not in ("snapshot", "diff", "event"):
            return
        if self.follower is None:
            if kind != "snapshot":
                return  # nothing to apply it to yet
            self.follower = BookFollower(str(message["exchange"]), str(message["symbol"]), data.get("depth"))
            precisions = data.get("precisions")
            if isinstance(precisions, list) and len(precisions) == 2:
                details = {"price_precision": precisions[0], "qty_precision": precisions[1]}
                self.follower.apply(Item(0, 0, "event", {"event": "instrument", "details": details}, b""))
        seq = int(data.get("recv_seq", 0))
        t_ns = int(data.get("recv_time_ns", 0))
        if kind == "snapshot":
            rec = dict(data)
            rec["kind"] = "snapshot"
            if data.get("source") == "follower":
                # The server's followed book: a restated book (its checksum was of an
                # earlier message), proven again by the next checksum or diff.
                rec["source"] = "local_book"
            self.follower.apply(Item(seq, t_ns, "snapshot", rec, b""))
        else:
            self.follower.apply(Item(seq, t_ns, str(data.get("kind", kind)), data, b""))
        self.last_seq = seq

    @property
    def state(self) -> str:
        """The engine state's name (``SYNCED``: the book is proven)."""
        return self.follower.state.name if self.follower is not None else "CONNECTING"

    def top(self, levels: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Best ``levels`` bids and asks as exact text."""
        if self.follower is None:
            return [], []
        return self.follower.engine.book.top(levels)
