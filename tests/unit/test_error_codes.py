from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ib_resilience.error_codes import (
    CODES,
    ErrorCategory,
    cancel_reject_state,
    classify,
    describe,
    exception_for,
    is_breaker_neutral,
    render_markdown,
)
from ib_resilience.errors import IBRequestError, OrderRejectedError, RateLimitError

ROOT = Path(__file__).resolve().parents[2]
T, P, C, R, I = (  # noqa: E741
    ErrorCategory.TRANSIENT,
    ErrorCategory.PERMANENT,
    ErrorCategory.CONNECTION,
    ErrorCategory.RATE_LIMIT,
    ErrorCategory.INFO,
)

# Every row of shared/reference/ib-error-codes.md.
REFERENCE = {
    100: R, 101: R, 102: P, 103: P, 104: P, 105: P, 110: P, 135: P, 161: P, 165: I,
    200: P, 201: P, 202: I, 203: P, 300: I, 309: R, 317: I, 320: T, 321: P, 322: T,
    326: C, 354: P, 366: I, 399: I, 404: I, 434: P, 501: I, 502: C, 503: P, 504: C,
    505: C, 506: P, 507: C, 508: C, 509: C, 1100: C, 1101: I, 1102: I, 1300: C,
    2100: I, 2101: I, 2102: T, 2103: C, 2104: I, 2105: C, 2106: I, 2107: I, 2108: I,
    2109: I, 2110: C, 2119: I, 2157: C, 2158: I, 10089: I, 10090: I, 10167: I,
    10168: P, 10186: P, 10147: P, 10148: I, 10182: C, 10197: P, 10225: T, 10268: P, 10269: P,
}  # fmt: skip


@pytest.mark.parametrize("code, category", sorted(REFERENCE.items()))
def test_reference_table(code, category):
    assert classify(code) is category
    assert code in CODES


def test_client_side_sending_errors():
    for code in range(510, 594):
        expected = P if code in (579, 585, 588) else C
        assert classify(code) is expected, code


@pytest.mark.parametrize(
    "text, category",
    [
        ("Historical Market Data Service error message:HMDS query returned no data", P),
        ("Historical Market Data Service error message:Historical data request pacing violation", R),
        ("Historical Market Data Service error message:API historical data query cancelled: 12", I),
        ("Trading TWS session is connected from a different IP address", C),
        ("Historical Market Data Service error message:No market data permissions", P),
        ("", P),
    ],
)
def test_162_by_text(text, category):
    assert classify(162, text) is category


def test_420_by_text():
    assert classify(420, "Invalid Real-time Query:Historical data request pacing violation") is R
    assert classify(420, "Invalid Real-time Query:No market data permissions") is P


def test_unknown_codes():
    assert classify(2150) is I  # IB's warning range
    assert classify(2199) is I
    assert classify(99999) is P  # conservative: raise, never retry, never count
    assert classify(-1) is P


NEVER_TRIP = [1101, 1102, 2104, 2106, 2158, 2107, 2108, 2109, 2119, 2100, 165, 202, 300, 366, 399,
              404, 10089, 10090, 10167, 10148]  # fmt: skip


@pytest.mark.parametrize("code", NEVER_TRIP)
def test_breaker_neutral_list(code):
    assert is_breaker_neutral(code)
    assert classify(code) is I


def test_breaker_neutrality_follows_the_category():
    assert is_breaker_neutral(162, "API historical data query cancelled: 1")
    assert not is_breaker_neutral(162, "pacing violation")
    assert is_breaker_neutral(201)  # PERMANENT neither counts nor resets
    for code in (100, 322, 326, 504, 1100, 2103, 2110):
        assert not is_breaker_neutral(code), code


def test_describe():
    assert describe(200) == "200: no security definition found [PERMANENT]"
    assert describe(162, "pacing violation").endswith("[RATE_LIMIT]")
    assert "unknown" in describe(98765)


def test_cancel_reject_state():
    assert cancel_reject_state("OrderId 7 that needs to be cancelled cannot be cancelled, state: Filled.") == "Filled"
    assert cancel_reject_state("OrderId 7 ... state: Cancelled.") == "Cancelled"
    assert cancel_reject_state("no state here") is None


@pytest.mark.parametrize("code", [201, 103, 110, 434, 10268, 10269, 104, 105])
def test_order_rejections(code):
    exc = exception_for(code, "rejected", 42)
    assert type(exc) is OrderRejectedError
    assert (exc.code, exc.text, exc.req_id, exc.category) == (code, "rejected", 42, P)


def test_exception_types():
    exc = exception_for(100, "Max rate of messages per second has been exceeded", 5)
    assert type(exc) is RateLimitError and exc.category is R and exc.req_id == 5
    exc = exception_for(162, "pacing violation", 6)
    assert type(exc) is RateLimitError
    exc = exception_for(200, "No security definition has been found", 7)
    assert type(exc) is IBRequestError and exc.category is P and exc.code == 200
    exc = exception_for(322, "Error processing request", 8)
    assert type(exc) is IBRequestError and exc.category is T
    exc = exception_for(504, "Not connected")
    assert exc.category is C and exc.req_id == -1
    assert "200" in str(exception_for(200, "x", 1)) and "PERMANENT" in str(exception_for(200, "x", 1))


def test_committed_doc_matches_the_table():
    doc = ROOT / "docs" / "error-codes.md"
    assert doc.read_text(encoding="utf-8") == render_markdown(), "run scripts/gen_error_codes_doc.py"


def test_doc_script_check_mode():
    script = ROOT / "scripts" / "gen_error_codes_doc.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
