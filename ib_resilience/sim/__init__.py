"""The gateway simulator: a protocol-faithful IB Gateway on loopback, with fault injection.

Standard library only; imports nothing else from ``ib_resilience`` and never ``ibapi``.
"""

from __future__ import annotations

from .gateway import ConnectionInfo, FakeGateway

__all__ = ["ConnectionInfo", "FakeGateway"]
