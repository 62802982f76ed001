"""Decoders for the hot messages that produce exactly the callbacks the official ``Decoder``
would, working on the raw frame (``frame.split(b"\\0")``) instead of the official
``comm.read_fields`` + ``Decoder.interpret`` + per-field ``decode()`` route.

"Exactly" means: the same wrapper methods, in the same order, with equal arguments of the same
types (``TickAttrib`` with the same attributes; ``int`` sizes on 9.81, ``Decimal`` on 10.x).
The rules are copied from each line's ``decoder.py`` at server version 157 (the only version we
negotiate): e.g. 9.81 decodes ERR_MSG, TICK_SIZE, TICK_GENERIC, TICK_STRING, CURRENT_TIME and
NEXT_VALID_ID "by signature" (exact field count, ``int(text)`` without the ``or 0`` default,
strings through ``unicode-escape``), while 10.x decodes ERR_MSG and TICK_SIZE with its
``decode()`` helpers. ``tests/bridge/test_fastpath_differential.py`` holds the proof.

Every handler converts all fields first and fires callbacks only afterwards. If a conversion
fails, or the frame's shape is not the common one, the handler returns False *before* any
callback, and the caller hands the frame to the official decoder, which then produces
whatever it produces (an error callback, a log line, an exception). So the fast path never
has to imitate the official failure modes.

Claimed ticks: a ``claim_tick(req_id, tick_type, value, size)`` callable, if given, sees every
decoded TICK_PRICE and TICK_SIZE first. If it returns True the tick is consumed and no wrapper
callback fires for that frame; otherwise the callbacks above fire unchanged. ``IBClient`` claims
the ticks of its own streaming subscriptions this way (one call per price-and-size message
instead of ``tickPrice`` + ``tickSize`` with a ``TickAttrib``); every other tick (snapshots,
unknown request ids) and every other message gets the official callbacks. A price tick is
claimed with the size that came in the same message (``None`` for types that carry none), a
size tick with ``size`` None.
"""

from __future__ import annotations

import inspect
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional

from ibapi.common import TickAttrib
from ibapi.ticktype import TickTypeEnum
from ibapi.wrapper import EWrapper

try:  # 10.x
    from ibapi.const import UNSET_DECIMAL as _UNSET_DECIMAL
except ImportError:  # 9.81 has no Decimal sizes
    _UNSET_DECIMAL = None

SERVER_VERSION = 157

# The official 10.x ``decode(Decimal, ...)`` maps these spellings (and "") to UNSET_DECIMAL.
_DECIMAL_UNSET_SPELLINGS = frozenset(
    {b"", b"2147483647", b"9223372036854775807", b"1.7976931348623157E308", b"-9223372036854775808"}
)

_SIZE_TICK_FOR_PRICE_TICK = {
    TickTypeEnum.BID: TickTypeEnum.BID_SIZE,
    TickTypeEnum.ASK: TickTypeEnum.ASK_SIZE,
    TickTypeEnum.LAST: TickTypeEnum.LAST_SIZE,
    TickTypeEnum.DELAYED_BID: TickTypeEnum.DELAYED_BID_SIZE,
    TickTypeEnum.DELAYED_ASK: TickTypeEnum.DELAYED_ASK_SIZE,
    TickTypeEnum.DELAYED_LAST: TickTypeEnum.DELAYED_LAST_SIZE,
}
_NOT_SET = TickTypeEnum.NOT_SET

#: ``claim_tick(req_id, tick_type, value, size) -> bool``; see the module docstring.
TickClaim = Callable[[int, int, Any, Any], bool]


def _error_has_time() -> bool:
    return "errorTime" in inspect.signature(EWrapper.error).parameters


def _sizes_are_decimal() -> bool:
    return inspect.signature(EWrapper.tickSize).parameters["size"].annotation is Decimal


def supported() -> bool:
    """True if the installed ``ibapi`` is one of the two lines this fast path mirrors:
    9.81 (``int`` sizes, 3-argument ``error``) or a recent 10.x (``Decimal`` sizes,
    ``error`` with ``errorTime``, ``Decoder.interpret(fields, msgId)``)."""
    decimal_sizes = _sizes_are_decimal()
    has_time = _error_has_time()
    if not decimal_sizes and not has_time:
        return True
    return decimal_sizes and has_time and _UNSET_DECIMAL is not None


def _sig_str(raw: bytes) -> str:
    """A string field decoded as the official ``interpretWithSignature`` does at 157."""
    if raw.isascii() and b"\\" not in raw:
        return raw.decode("ascii")
    try:
        return raw.decode("unicode-escape")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode_str(raw: bytes) -> str:
    """``decode(str, fields)`` of both lines (UTF-8, backslashreplace)."""
    return raw.decode("utf-8", errors="backslashreplace")


def _decode_unicode_str(raw: bytes) -> str:
    """10.x ``decode(str, fields, False, True)`` (unicode-escape, backslashreplace)."""
    if raw.isascii() and b"\\" not in raw:
        return raw.decode("ascii")
    return raw.decode("unicode-escape", errors="backslashreplace")


class _Memo(Dict[bytes, Any]):
    """``convert(raw)`` memoised per spelling: request ids, tick types, versions, masks and sizes
    repeat, and a dict hit costs a fifth of ``int()``. Values are immutable (ints, Decimals), so
    sharing them is safe. Failures are not cached (``convert`` raises again). Bounded: cleared
    when full."""

    def __init__(self, convert: Callable[[bytes], Any]) -> None:
        super().__init__()
        self._convert = convert

    def __missing__(self, raw: bytes) -> Any:
        value = self._convert(raw)
        if len(self) >= _MEMO_MAX:
            self.clear()
        self[raw] = value
        return value


def _to_decimal(raw: bytes) -> Decimal:
    """10.x ``decode(Decimal, fields)``."""
    if raw in _DECIMAL_UNSET_SPELLINGS:
        return _UNSET_DECIMAL  # type: ignore[return-value]
    return Decimal(raw.decode())


def _float(raw: bytes) -> float:
    """``decode(float, fields)`` of both lines."""
    return float(raw or 0)


_MEMO_MAX = 4096
_INTS = _Memo(lambda raw: int(raw or 0))  # the official decode(int, ...)
_DECIMALS = _Memo(_to_decimal)


Handler = Callable[[List[bytes]], bool]


def _by_signature(wrapper: Any, method: str, *convert: Callable[[bytes], Any]) -> Handler:
    """A handler for a message the official decoder decodes "by signature": exactly
    ``len(convert)`` fields after the version, each converted strictly (``int("")`` fails, no
    ``or 0`` default), then ``wrapper.<method>(*fields)``."""
    size = len(convert) + 3  # message id, version, the fields, the piece after the last NUL

    def handle(f: List[bytes]) -> bool:
        if len(f) != size:
            return False
        try:
            args = [c(raw) for c, raw in zip(convert, f[2:])]
        except ValueError:
            return False
        getattr(wrapper, method)(*args)
        return True

    return handle


class FastPath:
    """Decodes the hot messages of one connection and calls ``wrapper``'s methods.

    ``handle(frame)`` returns True if it produced the callbacks, False if the frame must go to
    the official decoder. Only valid at server version 157.
    """

    def __init__(self, wrapper: Any, claim_tick: Optional[TickClaim] = None) -> None:
        if not supported():
            raise RuntimeError("the installed ibapi line is not supported by the fast path")
        self._w = wrapper
        self._claim = claim_tick
        decimal = _sizes_are_decimal()
        # How each line decodes sizes and order quantities: 10.x Decimal, 9.81 int / float.
        self._sizes: _Memo = _DECIMALS if decimal else _INTS  # subscripted on the hot path
        self._quantity: Callable[[bytes], Any] = _DECIMALS.__getitem__ if decimal else _float
        handlers: Dict[bytes, Handler] = {b"1": self._tick_price, b"3": self._order_status}
        if decimal:
            handlers[b"2"] = self._tick_size_10
            handlers[b"4"] = self._error_10
        else:
            handlers[b"2"] = self._tick_size_9
            handlers[b"4"] = _by_signature(wrapper, "error", int, int, _sig_str)
        # Decoded "by signature" in both lines.
        handlers[b"9"] = _by_signature(wrapper, "nextValidId", int)
        handlers[b"45"] = _by_signature(wrapper, "tickGeneric", int, int, float)
        handlers[b"46"] = _by_signature(wrapper, "tickString", int, int, _sig_str)
        handlers[b"49"] = _by_signature(wrapper, "currentTime", int)
        self._handlers = handlers

    @property
    def handlers(self) -> Dict[bytes, Handler]:
        """Message id (as the raw field) -> handler of the split frame; for a caller that
        splits the frame itself. A handler returns what :meth:`handle` returns."""
        return self._handlers

    def handle(self, frame: bytes) -> bool:
        fields = frame.split(b"\0")
        handler = self._handlers.get(fields[0])
        if handler is None:
            return False
        return handler(fields)

    # ``fields`` is the raw split, so it carries one extra empty element after the last NUL;
    # the official field count is len(fields) - 1.

    # ------------------------------------------------------------------ TICK_PRICE (1)

    def _tick_price(self, f: List[bytes]) -> bool:
        if len(f) != 8:  # 7 fields at 157; the official decoder ignores any extra ones
            if len(f) < 8:
                return False
            f = f[:8]
        _, version, raw_req, raw_type, raw_price, raw_size, raw_mask, _ = f
        ints = _INTS
        try:
            ints[version]  # decoded (and so validated), then ignored
            req_id = ints[raw_req]
            tick_type = ints[raw_type]
            price = float(raw_price or 0)
            size = self._sizes[raw_size]
            mask = ints[raw_mask]
        except Exception:  # ValueError; 10.x sizes: decimal.InvalidOperation, UnicodeDecodeError
            return False
        size_tick = _SIZE_TICK_FOR_PRICE_TICK.get(tick_type)
        claim = self._claim
        if claim is None or not claim(req_id, tick_type, price, None if size_tick is None else size):
            self._fire_tick_price(req_id, tick_type, price, size, mask, size_tick)
        return True

    def _fire_tick_price(
        self, req_id: int, tick_type: int, price: float, size: Any, mask: int, size_tick: Optional[int]
    ) -> None:
        attrib = TickAttrib()
        attrib.canAutoExecute = mask & 1 != 0
        attrib.pastLimit = mask & 2 != 0
        attrib.preOpen = mask & 4 != 0
        w = self._w
        w.tickPrice(req_id, tick_type, price, attrib)
        if size_tick is not None:
            w.tickSize(req_id, size_tick, size)

    # ------------------------------------------------------------------ TICK_SIZE (2)

    def _tick_size_9(self, f: List[bytes]) -> bool:
        # 9.81: by signature (exactly 5 fields, version not parsed, no NOT_SET filter).
        if len(f) != 6:
            return False
        try:
            req_id = int(f[2])
            tick_type = int(f[3])
            size = int(f[4])
        except ValueError:
            return False
        claim = self._claim
        if claim is None or not claim(req_id, tick_type, size, None):
            self._w.tickSize(req_id, tick_type, size)
        return True

    def _tick_size_10(self, f: List[bytes]) -> bool:
        if len(f) < 6:
            return False
        try:
            int(f[1] or 0)
            req_id = int(f[2] or 0)
            tick_type = int(f[3] or 0)
            size = _DECIMALS[f[4]]
        except Exception:
            return False
        if tick_type != _NOT_SET:
            claim = self._claim
            if claim is None or not claim(req_id, tick_type, size, None):
                self._w.tickSize(req_id, tick_type, size)
        return True

    # ------------------------------------------------------------------ ORDER_STATUS (3)

    def _order_status(self, f: List[bytes]) -> bool:
        if len(f) < 13:
            return False
        quantity = self._quantity
        try:
            args = (
                int(f[1] or 0),
                _decode_str(f[2]),
                quantity(f[3]),
                quantity(f[4]),
                float(f[5] or 0),
                int(f[6] or 0),
                int(f[7] or 0),
                float(f[8] or 0),
                int(f[9] or 0),
                _decode_str(f[10]),
                float(f[11] or 0),
            )
        except Exception:  # ValueError; 10.x quantities: decimal.InvalidOperation
            return False
        self._w.orderStatus(*args)
        return True

    # ------------------------------------------------------------------ ERR_MSG (4)

    def _error_10(self, f: List[bytes]) -> bool:
        # At 157: version, reqId, code, text; no advancedOrderRejectJson (166), no errorTime (194).
        if len(f) < 6:
            return False
        try:
            int(f[1] or 0)
            req_id = int(f[2] or 0)
            code = int(f[3] or 0)
            text = _decode_unicode_str(f[4])
        except ValueError:
            return False
        self._w.error(req_id, 0, code, text, "")
        return True
