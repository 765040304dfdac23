"""The exchange simulator: Binance, Kraken v2 and Bitfinex v2 on loopback, real wire protocols.

``SimServer`` serves a seeded synthetic market (with a deterministic 30-day past for the
history endpoints) and injects faults from a ``FaultPlan``; ``ReplayServer`` serves a
capture file's frames and REST answers. Both run inside a running event loop::

    async with SimServer("binance", ["BTCUSDT"]) as sim:
        ...  # connect to sim.ws_url, fetch from sim.rest_url

The pure pieces (market model, venue protocol modules, fault plan) live in their own
modules and are tested without sockets.
"""

from mmdata.sim.faults import FaultPlan
from mmdata.sim.replay import ReplayServer
from mmdata.sim.server import VENUES, SimServer

__all__ = ["VENUES", "FaultPlan", "ReplayServer", "SimServer"]
