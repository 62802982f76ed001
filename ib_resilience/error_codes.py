"""IB message codes: what each one means and how a resilient client should treat it.

The table below is data, built from ``shared/reference/ib-error-codes.md`` and both official
clients' ``ibapi/errors.py``. :func:`classify` is pure: it decides a category and nothing else;
what happens next (raise, count in a breaker, wake the watchdog, resubscribe) belongs to the
caller.

Codes the table does not know:

* 2100–2199 are IB's documented *warning* range, so an unknown code there is ``INFO``. The
  ones in that range that do signal degradation (2102, 2103, 2105, 2110, 2157) are listed
  explicitly, so this rule never hides them.
* every other unknown code is ``PERMANENT``. For an error bound to a request that is the
  conservative choice: the caller gets the error at once, it is not retried (retrying an
  order on an error we do not understand risks a duplicate) and it does not count towards a
  breaker (it says nothing about the health of the connection).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

from ib_resilience.errors import IBRequestError, OrderRejectedError, RateLimitError


class ErrorCategory(enum.Enum):
    """How a message code should be handled."""

    TRANSIENT = "transient"  # worth retrying; counts towards a breaker
    PERMANENT = "permanent"  # raise at once; never retried, never counted
    CONNECTION = "connection"  # the link (socket, gateway↔IB, or a data farm) is broken
    RATE_LIMIT = "rate_limit"  # a pace or quota was exceeded; slow down
    INFO = "info"  # a notice, not an error


T = ErrorCategory.TRANSIENT
P = ErrorCategory.PERMANENT
C = ErrorCategory.CONNECTION
R = ErrorCategory.RATE_LIMIT
I = ErrorCategory.INFO  # noqa: E741

# Codes whose category depends on the text; the table holds their fallback category.
TEXT_DEPENDENT_CODES = frozenset({162, 420})

# The client-side "… Sending Error" range, except three that a retry cannot fix.
_CLIENT_SEND_ERRORS = tuple(c for c in range(510, 594) if c not in (579, 585, 588))


@dataclass(frozen=True)
class CodeRow:
    """One row of the table: one or more codes sharing a category and meaning."""

    codes: Tuple[int, ...]
    category: ErrorCategory
    meaning: str
    handling: str = ""


# (codes, category, meaning, handling) — the order is the order of the generated document.
ROWS: Tuple[CodeRow, ...] = (
    CodeRow((100,), R, "more than 50 messages per second; the gateway will likely disconnect", "slow the pacer"),
    CodeRow((101,), R, "maximum number of market data lines reached", "a quota, not a pace"),
    CodeRow((102,), P, "duplicate ticker id"),
    CodeRow((103,), P, "duplicate order id", "re-sync order ids (reqIds) before any retry"),
    CodeRow((104,), P, "cannot modify a filled order"),
    CodeRow((105,), P, "modified order does not match the original"),
    CodeRow((110,), P, "price does not conform to the minimum price variation"),
    CodeRow((135,), P, "order id not found", "reconcile"),
    CodeRow((161,), P, "order is not in a cancellable state", "reconcile"),
    CodeRow(
        (162,),
        P,
        "historical data service error",
        'by text: "pacing violation" → RATE_LIMIT; "query cancelled" → INFO; '
        '"different IP" → CONNECTION; otherwise PERMANENT',
    ),
    CodeRow((165,), I, "historical data query message"),
    CodeRow((200,), P, "no security definition found"),
    CodeRow((201,), P, "order rejected"),
    CodeRow((202,), I, "order cancelled", "a state change, never a failure"),
    CodeRow((203,), P, "security not allowed for this account"),
    CodeRow((300,), I, "cannot find the subscription for a ticker id"),
    CodeRow((309,), R, "maximum 3 market depth requests", "a quota"),
    CodeRow((317,), I, "market depth data reset", "clear the book"),
    CodeRow((320,), T, "server error reading a request", "retry with a cap"),
    CodeRow((321,), P, "server error validating a request"),
    CodeRow((322,), T, "server error processing a request", "retry with a cap"),
    CodeRow((326,), C, "client id already in use", "wait, or switch to a fallback id"),
    CodeRow((354,), P, "market data not subscribed"),
    CodeRow((366,), I, "no historical query for the ticker id"),
    CodeRow((399,), I, "order message (warning)"),
    CodeRow((404,), I, "shares not located; order held"),
    CodeRow((420,), P, "invalid real-time query", 'by text: "pacing" → RATE_LIMIT; otherwise PERMANENT'),
    CodeRow((434,), P, "order size cannot be zero"),
    CodeRow((501,), I, "already connected (client side)"),
    CodeRow((502,), C, "could not connect (client side)"),
    CodeRow((503,), P, "the gateway is out of date", "an operator must upgrade it"),
    CodeRow((504,), C, "not connected (client side)"),
    CodeRow((505,), C, "unknown message id (client side)"),
    CodeRow((506,), P, "unsupported version (client side)", "an operator must act"),
    CodeRow((507,), C, "bad message length (client side)"),
    CodeRow((508,), C, "bad message (client side)"),
    CodeRow((509,), C, "exception while reading the socket (client side)"),
    CodeRow(_CLIENT_SEND_ERRORS, C, "request sending error (client side)"),
    CodeRow((579,), P, "invalid symbol in string (client side)"),
    CodeRow((585,), P, "FA profile no longer supported (client side)"),
    CodeRow((588,), P, "error encoding protobuf (client side)"),
    CodeRow((1100,), C, "connectivity between the gateway and IB lost", "upstream only: the API socket stays open"),
    CodeRow((1101,), I, "connectivity restored, market data lost", "resubscribe"),
    CodeRow((1102,), I, "connectivity restored, market data kept"),
    CodeRow((1300,), C, "socket port changed", "reconnect on the new port"),
    CodeRow((2100,), I, "account update subscription overridden"),
    CodeRow((2101,), I, "account update subscription refused"),
    CodeRow((2102,), T, "order still being processed; cannot modify yet"),
    CodeRow((2103,), C, "market data farm connection broken", "degrade data, not the session"),
    CodeRow((2104,), I, "market data farm connection OK"),
    CodeRow((2105,), C, "historical data farm connection broken", "degrade data, not the session"),
    CodeRow((2106,), I, "historical data farm connection OK"),
    CodeRow((2107,), I, "historical data farm inactive"),
    CodeRow((2108,), I, "market data farm inactive"),
    CodeRow((2109,), I, "outsideRth flag ignored"),
    CodeRow((2110,), C, "connectivity between the gateway and its server broken", "upstream; restores itself"),
    CodeRow((2119,), I, "market data farm connecting"),
    CodeRow((2157,), C, "security definition data farm connection broken", "degrade data, not the session"),
    CodeRow((2158,), I, "security definition data farm connection OK"),
    CodeRow((10089,), I, "additional subscription required; delayed data available"),
    CodeRow((10090,), I, "part of the requested market data is not subscribed"),
    CodeRow((10147,), P, "order to cancel not found", "reconcile"),
    CodeRow((10148,), I, 'order cannot be cancelled, "state: X"', "parse X: Filled and Cancelled differ"),
    CodeRow((10167,), I, "delayed market data displayed"),
    CodeRow((10168,), P, "market data not subscribed; delayed data not enabled"),
    CodeRow((10182,), C, "failed to request live updates (disconnected)", "for that subscription"),
    CodeRow((10186,), P, "market data not subscribed; delayed data not enabled"),
    CodeRow((10197,), P, "no market data during a competing live session", "until an operator acts"),
    CodeRow((10225,), T, "bust event", "resubscribe real-time bars"),
    CodeRow((10268,), P, "the eTradeOnly order attribute is not supported"),
    CodeRow((10269,), P, "the firmQuoteOnly order attribute is not supported"),
)


@dataclass(frozen=True)
class CodeInfo:
    """What the table says about one code."""

    code: int
    category: ErrorCategory
    meaning: str
    handling: str = ""


def _index(rows: Tuple[CodeRow, ...]) -> Mapping[int, CodeInfo]:
    table: dict = {}
    for row in rows:
        for code in row.codes:
            if code in table:
                raise AssertionError(f"error code {code} listed twice")
            table[code] = CodeInfo(code, row.category, row.meaning, row.handling)
    return MappingProxyType(table)


CODES: Mapping[int, CodeInfo] = _index(ROWS)

# Order-level rejections: PERMANENT errors raised as OrderRejectedError.
ORDER_REJECTION_CODES = frozenset({103, 104, 105, 110, 201, 434, 10268, 10269})
# The gateway lost its link to IB; our socket is fine (hold orders, don't reconnect).
UPSTREAM_CODES = frozenset({1100, 2110})
# One data farm is down: degrade that data, keep the session.
FARM_BROKEN_CODES = frozenset({2103, 2105, 2157})
FARM_OK_CODES = frozenset({2104, 2106, 2158})
# Upstream restored: 1101 lost the market data subscriptions, 1102 kept them.
RESTORED_DATA_LOST = 1101
RESTORED_DATA_KEPT = 1102
CLIENT_ID_IN_USE = 326
ORDER_CANCELLED = 202
CANNOT_CANCEL = 10148
NO_SECURITY_DEFINITION = 200

_PACING = re.compile(r"pacing", re.IGNORECASE)
_QUERY_CANCELLED = re.compile(r"query\s+cancel", re.IGNORECASE)
_DIFFERENT_IP = re.compile(r"different\s+ip", re.IGNORECASE)
_STATE = re.compile(r"state:\s*([A-Za-z]+)", re.IGNORECASE)


def classify(code: int, text: str = "") -> ErrorCategory:
    """The category of IB message ``code`` (``text`` decides for 162 and 420)."""
    if code == 162:
        if _PACING.search(text):
            return R
        if _QUERY_CANCELLED.search(text):
            return I
        if _DIFFERENT_IP.search(text):
            return C
        return P
    if code == 420:
        return R if _PACING.search(text) else P
    info = CODES.get(code)
    if info is not None:
        return info.category
    if 2100 <= code <= 2199:
        return I
    return P


def counts_as_failure(category: ErrorCategory) -> bool:
    """Whether a breaker counts an error of this category as a failure."""
    return category in (T, C, R)


def is_breaker_neutral(code: int, text: str = "") -> bool:
    """True for codes that must never trip (or reset) a breaker: INFO and PERMANENT."""
    return not counts_as_failure(classify(code, text))


def describe(code: int, text: str = "") -> str:
    """A one-line human description: meaning and category."""
    info = CODES.get(code)
    meaning = info.meaning if info is not None else "unknown code"
    return f"{code}: {meaning} [{classify(code, text).name}]"


def cancel_reject_state(text: str) -> Optional[str]:
    """The order state named in a 10148 text ("... state: Filled.") or None."""
    match = _STATE.search(text)
    return match.group(1) if match else None


def exception_for(code: int, text: str, req_id: int = -1) -> IBRequestError:
    """The exception a caller should see for error ``code`` on request ``req_id``.

    It carries code, text, request id and category. PERMANENT order rejections become
    :class:`OrderRejectedError`, RATE_LIMIT errors :class:`RateLimitError`, anything else
    :class:`IBRequestError` (the breaker reads ``.category`` to decide what counts).
    """
    category = classify(code, text)
    if category is R:
        return RateLimitError(code, text, req_id, category)
    if category is P and code in ORDER_REJECTION_CODES:
        return OrderRejectedError(code, text, req_id, category)
    return IBRequestError(code, text, req_id, category)


def _format_codes(codes: Tuple[int, ...]) -> str:
    """Consecutive runs as ranges: ``510–578, 580–584``."""
    parts = []
    start = prev = codes[0]
    for code in codes[1:] + (None,):  # type: ignore[operator]
        if code is not None and code == prev + 1:
            prev = code
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if code is not None:
            start = prev = code
    return ", ".join(parts)


def render_markdown() -> str:
    """The text of ``docs/error-codes.md`` (written by ``scripts/gen_error_codes_doc.py``)."""
    lines = [
        "# IB error codes",
        "",
        "<!-- Generated by scripts/gen_error_codes_doc.py from ib_resilience/error_codes.py."
        " Do not edit by hand. -->",
        "",
        "`ib_resilience.error_codes.classify(code, text)` maps every message code the gateway (or the",
        "official client) reports to one category:",
        "",
        "| category | meaning | breaker |",
        "| --- | --- | --- |",
        "| TRANSIENT | worth retrying | counts as a failure |",
        "| CONNECTION | the link is broken (socket, gateway↔IB, or a data farm) | counts; wakes the watchdog |",
        "| RATE_LIMIT | a pace or quota was exceeded | counts; slows the pacer |",
        "| PERMANENT | raised at once, never retried | neither counts nor resets |",
        "| INFO | a notice, not an error | never reaches a breaker |",
        "",
        "Codes not in the table: 2100–2199 (IB's warning range) are INFO — the degradation codes",
        "in that range are listed explicitly — and every other unknown code is PERMANENT: raised",
        "at once, not retried (an order retried on an error we do not understand risks a",
        "duplicate) and not counted by a breaker (it says nothing about the connection).",
        "",
        "Errors reach callers as `OrderRejectedError` (PERMANENT order rejections: "
        + ", ".join(str(c) for c in sorted(ORDER_REJECTION_CODES))
        + "),",
        "`RateLimitError` (RATE_LIMIT) or `IBRequestError`; each carries `code`, `text`, `req_id`",
        "and `category`.",
        "",
        "| code | meaning | category | handling |",
        "| --- | --- | --- | --- |",
    ]
    for row in ROWS:
        category = row.category.name
        if set(row.codes) & TEXT_DEPENDENT_CODES:
            category = f"by text (default {category})"
        lines.append(f"| {_format_codes(row.codes)} | {row.meaning} | {category} | {row.handling} |")
    lines.append("")
    return "\n".join(lines)
