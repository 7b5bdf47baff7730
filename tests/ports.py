"""Free TCP ports for tests that start several processes (torchrun / accelerate default to 29500,
which another job on the machine may hold)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
