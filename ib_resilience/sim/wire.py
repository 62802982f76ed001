"""Framing of the TWS socket protocol: length-prefixed frames of NUL-terminated ASCII fields.

Standard library only. The parser is incremental and bounded: it never buffers more than one
frame of at most ``max_frame`` bytes, and it raises :class:`ProtocolError` on anything a real
client would never send, so the gateway can drop a hostile peer without crashing.
"""

from __future__ import annotations

import math
import struct
from typing import List, Optional, Sequence, Union

API_PREFIX = b"API\0"
UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2**31 - 1
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB: the largest real request is a few kB

Field = Union[str, int, float, bool, None]

_LEN = struct.Struct("!I")


class ProtocolError(Exception):
    """The peer sent bytes no TWS client sends (bad prefix, oversized or malformed frame)."""


def format_field(value: Field) -> str:
    """Render one outbound field the way a gateway does.

    ``None`` and the unset sentinels become ``""``; booleans ``"1"``/``"0"``; integral floats
    keep one decimal only when they are prices (callers pass ints for sizes and ids).
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return "" if value == UNSET_INTEGER else str(value)
    if isinstance(value, float):
        if value == UNSET_DOUBLE or math.isnan(value) or math.isinf(value):
            return ""
        text = repr(round(value, 8))
        return text
    return str(value)


def encode_payload(fields: Sequence[Field]) -> bytes:
    """The payload of one frame (no length prefix): every field NUL-terminated."""
    text = "".join(format_field(f) + "\0" for f in fields)
    return text.encode("ascii", errors="replace")


def encode_frame(fields: Sequence[Field]) -> bytes:
    """One complete frame: 4-byte big-endian length, then the fields."""
    payload = encode_payload(fields)
    return _LEN.pack(len(payload)) + payload


def frame_raw(payload: bytes) -> bytes:
    """Length-prefix arbitrary bytes (used for garbage injection and tests)."""
    return _LEN.pack(len(payload)) + payload


def split_fields(payload: bytes) -> List[str]:
    """Split a frame payload into text fields. Raises ProtocolError if not NUL-terminated ASCII."""
    if not payload or payload[-1:] != b"\0":
        raise ProtocolError("frame payload is not NUL-terminated")
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError("frame payload is not ASCII") from exc
    return text.split("\0")[:-1]


class FrameParser:
    """Incremental frame parser: feed bytes, get complete frames' payloads (bytes).

    ``expect_prefix=True`` first requires the raw ``API\\0`` handshake prefix, as a gateway does
    on a fresh connection. Raises :class:`ProtocolError` on a bad prefix or a length of zero or
    above ``max_frame``. Payloads are returned raw because the first one (``v100..157``) is not
    NUL-terminated; use :func:`split_fields` for the others.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, expect_prefix: bool = False) -> None:
        self.max_frame = max_frame
        self._need_prefix = expect_prefix
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> List[bytes]:
        self._buf += data
        frames: List[bytes] = []
        if self._need_prefix:
            n = min(len(self._buf), len(API_PREFIX))
            if bytes(self._buf[:n]) != API_PREFIX[:n]:
                raise ProtocolError("connection does not start with API\\0")
            if n < len(API_PREFIX):
                return frames
            del self._buf[: len(API_PREFIX)]
            self._need_prefix = False
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Optional[bytes]:
        if len(self._buf) < 4:
            return None
        (size,) = _LEN.unpack_from(self._buf, 0)
        if size == 0 or size > self.max_frame:
            raise ProtocolError(f"frame length {size} out of bounds (max {self.max_frame})")
        if len(self._buf) < 4 + size:
            return None
        payload = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return payload
