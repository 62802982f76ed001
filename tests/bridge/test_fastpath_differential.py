"""The fast path produces exactly the callbacks the official Decoder does (same methods, order,
argument types and values) for every frame it accepts; frames it declines get no callback from
it (they go to the official decoder). Run under both ibapi lines."""

from __future__ import annotations

from typing import List, Optional, Tuple

import pytest
from ibapi.decoder import Decoder

from ib_resilience.bridge import _INTERPRET_TAKES_MSG_ID
from ib_resilience.fastpath import FastPath, supported

from .gwserver import encode_fields
from .recording import RecordingWrapper, norm

MUST_BE_FAST: List[bytes] = []
MAY_DECLINE: List[bytes] = []


def fast(*fields: object) -> bytes:
    f = encode_fields(*fields)  # type: ignore[arg-type]
    MUST_BE_FAST.append(f)
    return f


def edge(*fields: object) -> bytes:
    f = encode_fields(*fields)  # type: ignore[arg-type]
    MAY_DECLINE.append(f)
    return f


# TICK_PRICE: every price tick type that carries a size, others, all attribute masks, odd sizes.
for tick_type in (1, 2, 4, 6, 7, 9, 14, 37, 66, 67, 68, 72, 75):
    for mask in range(8):
        fast(1, 6, 1000 + tick_type, tick_type, "101.25", 300, mask)
for price in ("0", "-1", "-0.0", "1.7976931348623157e+308", "1e-9", "123456789.123456789", "", "-99.5", "nan", "inf"):
    fast(1, 6, 9, 1, price, 100, 0)
for size in ("0", "", "2147483647", "9223372036854775807", "123456789012", "-1", "-9223372036854775808"):
    fast(1, 6, 9, 2, "1.5", size, 1)
fast(1, 6, 9, 4, "1.5", 100, 0, "extra-field-ignored")
fast(1, 6, 9, 1, "1.5", 100, "")  # empty mask decodes as 0
edge(1, 6, 9, 1, "1.5", "1.5", 0)  # fractional size: 9.81 int() fails, 10.x accepts
edge(1, 6, 9, 1, "1.7976931348623157E308", "1.7976931348623157E308", 0)
edge(1, 6, 9, 1, "abc", 100, 0)
edge(1, 6, 9, 1, "1.5", 100)  # too short
edge(1, 6, 9, 1, "Infinity", 100, 0)
edge(1, "x", 9, 1, "1.5", 100, 0)
edge(1, 6, "", 1, "1.5", 100, 0)

# TICK_SIZE
for tick_type in (0, 3, 5, 8, 21, 69, 70, 71, 74):
    for size in ("0", "1", "250", "123456789012", "-1", "9223372036854775807"):
        fast(2, 6, 7, tick_type, size)
edge(2, 6, 7, 0, "")
edge(2, 6, 7, 0, "2147483647")
edge(2, 6, 7, 100, 5)  # NOT_SET tick type
edge(2, 6, 7, 0, "1.5")
edge(2, 6, 7, 0, "12", "extra")
edge(2, 6, 7, 0)
edge(2, 6, 7, "", 5)

# ORDER_STATUS (no version field at 157)
fast(3, 11, "Submitted", "0", "100", "0", 123456, 0, "0", 1, "", "0")
fast(3, 12, "Filled", "100", "0", "150.25", 1234567, 11, "150.25", 1, "", "1.7976931348623157E308")
fast(3, 13, "PreSubmitted", "", "", "", 0, 0, "", 0, "locate", "")
fast(3, 14, "Cancelled", "0", "100", "1.7976931348623157e+308", 9, 0, "1.7976931348623157e+308", 0, "child,locate", "0")
fast(3, 15, "PendingSubmit", "2.5", "97.5", "-0.0", 42, 41, "-1", 7, "", "101")
fast(3, 16, "Submitted", "0", "100", "0", 1, 0, "0", 1, b"caf\xc3\xa9 \\n", "0")
edge(3, 17, "Submitted", "0", "100", "0", 1, 0, "0", 1, "")  # too short
edge(3, 17, "Submitted", "x", "100", "0", 1, 0, "0", 1, "", "0")
edge(3, 17, "Submitted", "0", "100", "0", "1.5", 0, "0", 1, "", "0")
edge(3, 17, b"\xff\xfe", "0", "100", "0", 1, 0, "0", 1, "", "0")

# ERR_MSG: odd texts
for text in (
    "Market data farm connection is OK:usfarm",
    "",
    "Order rejected - reason:YOUR ORDER IS NOT ACCEPTED. IN ORDER TO OBTAIN THE DESIRED POSITION",
    "a, b; c: d = e & f | <g> \"h\" 'i'",
    "tab\there",
):
    fast(4, 2, -1, 2104, text)
fast(4, 2, 17, 200, "No security definition has been found for the request")
fast(4, 2, -1, 1100, "Connectivity between IB and TWS has been lost.")
edge(4, 2, -1, 2104, b"back\\slash \\u00e9 \\x41")
edge(4, 2, -1, 2104, b"trailing backslash \\")
edge(4, 2, -1, 2104, b"latin-1 caf\xe9")
edge(4, 2, -1, 2104, b"utf-8 caf\xc3\xa9")
edge(4, 2, -1, 2104, "text", "extra")
edge(4, 2, -1, 2104)
edge(4, 2, "", 2104, "x")
edge(4, 2, -1, "x", "y")

# CURRENT_TIME, NEXT_VALID_ID, TICK_GENERIC, TICK_STRING
fast(49, 1, 1_764_489_900)
fast(49, 1, 0)
fast(9, 1, 1)
fast(9, 1, 2_000_000_000)
fast(45, 6, 3, 49, "0.5")
fast(45, 6, 3, 23, "-1")
fast(46, 6, 3, 45, "1764489900")
fast(46, 6, 3, 32, "PQZ")
fast(46, 6, 3, 48, "101.5;100;1764489900000;1000;101.2;true")
edge(49, 1)
edge(49, 1, "")
edge(49, 1, 5, 6)
edge(49, 1, "1.5")
edge(9, 1, "")
edge(45, 6, 3, 49, "")
edge(45, 6, 3, 49, "Infinity")
edge(46, 6, 3, 45, b"\\x41")
edge(46, 6, 3, 45, b"caf\xe9")
edge(46, 6, 3, 45)

# Messages the fast path never takes.
edge(15, 1, "DU1,DU2")
edge(59, 1, "0001.01", "1.25", "USD", "1.7976931348623157E308", "", "")
edge(999, 1, 2)


def official(frame: bytes) -> Tuple[List[Tuple[str, tuple]], Optional[str]]:
    rec = RecordingWrapper()
    decoder = Decoder(rec, 157)
    fields = frame.split(b"\0")[:-1]
    try:
        if _INTERPRET_TAKES_MSG_ID:
            decoder.interpret(tuple(fields[1:]), int(fields[0]))
        else:
            decoder.interpret(tuple(fields))
    except Exception as exc:
        return rec.calls, type(exc).__name__
    return rec.calls, None


def fastpath(frame: bytes) -> Tuple[bool, List[Tuple[str, tuple]]]:
    rec = RecordingWrapper()
    handled = FastPath(rec).handle(frame)
    return handled, rec.calls


def test_the_installed_line_is_supported() -> None:
    assert supported()


@pytest.mark.parametrize("frame", MUST_BE_FAST + MAY_DECLINE, ids=lambda f: repr(f)[:60])
def test_same_callbacks_as_the_official_decoder(frame: bytes) -> None:
    handled, ours = fastpath(frame)
    if not handled:
        assert ours == [], "a declined frame must not have produced callbacks"
        assert frame not in MUST_BE_FAST, "a common frame fell off the fast path"
        return
    theirs, raised = official(frame)
    assert raised is None, f"the fast path accepted a frame the official decoder rejects ({raised})"
    assert ours == theirs


def test_tick_price_fires_tick_size_for_bid_ask_last_only() -> None:
    handled, calls = fastpath(encode_fields(1, 6, 5, 1, "10.5", 200, 3))
    assert handled
    assert [name for name, _ in calls] == ["tickPrice", "tickSize"]
    attrib = dict(calls[0][1][3][1])
    assert attrib == {
        "canAutoExecute": ("bool", "True"),
        "pastLimit": ("bool", "True"),
        "preOpen": ("bool", "False"),
    }
    handled, calls = fastpath(encode_fields(1, 6, 5, 6, "10.5", 200, 0))  # HIGH: no size
    assert handled and [name for name, _ in calls] == ["tickPrice"]


TICK_FRAMES = [f for f in MUST_BE_FAST + MAY_DECLINE if f.split(b"\0")[0] in (b"1", b"2")]


@pytest.mark.parametrize("frame", TICK_FRAMES, ids=lambda f: repr(f)[:60])
def test_a_claim_that_declines_changes_no_callback(frame: bytes) -> None:
    """With a claim installed that declines everything, every tick frame still produces exactly
    the official callbacks (or is declined as before)."""
    offered: List[tuple] = []
    rec = RecordingWrapper()
    handled = FastPath(rec, lambda *args: bool(offered.append(args))).handle(frame)
    plain_handled, plain_calls = fastpath(frame)
    assert (handled, rec.calls) == (plain_handled, plain_calls)
    if not handled:
        assert offered == []


@pytest.mark.parametrize("frame", TICK_FRAMES, ids=lambda f: repr(f)[:60])
def test_a_claimed_tick_carries_what_the_official_callbacks_would(frame: bytes) -> None:
    """A claimed tick fires no callback, and the claim saw the request id, tick type, value and
    size (same types and values) that the official decoder's tickPrice/tickSize carry."""
    handled, plain_calls = fastpath(frame)
    if not handled:
        return
    claimed: List[tuple] = []
    rec = RecordingWrapper()

    def claim(req_id: int, tick_type: int, value: object, size: object) -> bool:
        claimed.append((req_id, tick_type, value, size))
        return True

    assert FastPath(rec, claim).handle(frame)
    assert rec.calls == []
    theirs, _ = official(frame)
    if not theirs:  # a NOT_SET size tick: nothing to claim either
        assert claimed == []
        return
    (req_id, tick_type, value, size), = claimed
    first = theirs[0]
    assert first[1][:3] == (norm(req_id), norm(tick_type), norm(value))
    if first[0] == "tickPrice":
        assert len(theirs) in (1, 2)
        assert (norm(size) if size is not None else None) == (theirs[1][1][2] if len(theirs) == 2 else None)
    else:
        assert first[0] == "tickSize" and len(theirs) == 1 and size is None
