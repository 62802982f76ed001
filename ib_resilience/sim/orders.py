"""Order engine (placeholder until the engine lands)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .gateway import FakeGateway, _Session


@dataclass(frozen=True)
class OrderRecord:
    client_id: int
    order_id: int
    is_open: bool = False


class OrderEngine:
    def __init__(self, gw: FakeGateway, seed: int = 7) -> None:
        self.gw = gw
        self._hwm: Dict[int, int] = {}

    def handlers(self) -> Dict[int, Callable[[_Session, List[str]], None]]:
        return {}

    def next_valid_id(self, client_id: int) -> int:
        return max(self._hwm.get(client_id, 0) + 1, self.gw.first_order_id)

    def on_session_ready(self, session: _Session) -> None:
        pass

    def on_session_closed(self, session: _Session) -> None:
        pass

    def on_price(self, symbol: str) -> None:
        pass

    def hold_acks(self, hold: bool) -> None:
        pass

    def force_fill(self, order_id: int, client_id: Optional[int], price: Optional[float]) -> None:
        pass

    def snapshot(self) -> List[OrderRecord]:
        return []

    def positions_snapshot(self) -> Dict[Tuple[str, str], float]:
        return {}


def _unused(*_: Any) -> None:  # pragma: no cover
    pass
