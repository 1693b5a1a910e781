"""systemd's notify protocol (READY=1, WATCHDOG=1, STATUS=..., STOPPING=1) without a dependency.

The service manager passes a datagram socket in $NOTIFY_SOCKET (a path, or an abstract name starting
with '@'); each message is one datagram of newline-separated KEY=VALUE pairs. Outside systemd every call
is a no-op that returns False.
"""
from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            # Never block: a stalled receiver must not stall the daemon (a lost keep-alive is the lesser harm).
            sock.send(message.encode(), socket.MSG_DONTWAIT)
        return True
    except OSError:  # includes BlockingIOError when the receiver's queue is full
        return False


def watchdog_interval() -> float | None:
    """Seconds between keep-alives (half of WatchdogSec), when systemd asked for them."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None
