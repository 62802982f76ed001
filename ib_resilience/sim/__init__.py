"""The gateway simulator: a protocol-faithful IB Gateway on loopback, with fault injection.

Standard library only; imports nothing else from ``ib_resilience`` and never ``ibapi``.
"""

from __future__ import annotations

from .faults import FaultPlan, FaultPlanError, FaultPlanRunner
from .gateway import ConnectionInfo, ExecutionInfo, FakeGateway
from .orders import ContractSpec, Fill, OrderRecord

__all__ = [
    "ConnectionInfo",
    "ContractSpec",
    "ExecutionInfo",
    "FakeGateway",
    "FaultPlan",
    "FaultPlanError",
    "FaultPlanRunner",
    "Fill",
    "OrderRecord",
]
