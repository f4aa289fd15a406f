"""The tarpit: slow down, then drop, a client that keeps guessing tokens.

A token has 44 random bits and every guess costs an SMTP round trip; the
tarpit makes each wrong guess past a few cost seconds, and past a limit the
connection itself. Counts are kept per client address (per /64 for IPv6,
where one host holds a whole network), survive reconnects, fade after a quiet
window, and never take more than *max_clients* entries: the least recently
seen client is forgotten first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_CLIENTS = 4096
WINDOW = 3600.0  # seconds without a bad recipient before a client is forgiven
MAX_DELAY = 60.0  # seconds; RFC 5321 4.5.3.2.3 gives clients 5 minutes per RCPT


@dataclass
class Strikes:
    count: int
    last: float


class Tarpit:
    """Bad-recipient counts per client, with the delay and drop they earn."""

    def __init__(
        self,
        after: int,
        delay: float,
        drop_after: int,
        max_clients: int = MAX_CLIENTS,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.after = after
        self.delay = delay
        self.drop_after = drop_after
        self.max_clients = max_clients
        self.window = window
        self.clock = clock
        self._clients: OrderedDict[str, Strikes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def strike(self, address: str) -> int:
        """Count one bad recipient from *address*; return its count now."""
        key, now = client_key(address), self.clock()
        strikes = self._current(key, now) or Strikes(0, now)
        strikes.count += 1
        strikes.last = now
        self._clients[key] = strikes
        self._clients.move_to_end(key)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return strikes.count

    def count(self, address: str) -> int:
        """The bad recipients counted for *address* (0 once forgiven)."""
        strikes = self._current(client_key(address), self.clock())
        return strikes.count if strikes else 0

    def delay_for(self, count: int) -> float:
        """Seconds to wait before answering the *count*-th bad recipient."""
        return min(MAX_DELAY, max(0, count - self.after) * self.delay)

    def drops(self, count: int) -> bool:
        """Whether the *count*-th bad recipient ends the connection."""
        return count > self.drop_after

    def _current(self, key: str, now: float) -> Strikes | None:
        strikes = self._clients.get(key)
        if strikes is not None and now - strikes.last > self.window:
            del self._clients[key]
            return None
        return strikes


def client_key(address: str) -> str:
    """The tarpit's key for a client address: itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
