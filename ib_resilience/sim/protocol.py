"""Message ids, error texts and the simple server → client layouts at server version 157.

Layouts follow ``shared/reference/tws-protocol.md``; every builder returns the field list of
one frame (message id first), ready for :func:`wire.encode_frame`.
"""

from __future__ import annotations

import time
from typing import List

from .wire import Field

SERVER_VERSION = 157
MIN_CLIENT_VERSION = 100


class In:
    """Client → server message ids."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCT_DATA = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DATA = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_CURRENT_TIME = 49
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_GLOBAL_CANCEL = 58
    REQ_COMPLETED_ORDERS = 99


class Out:
    """Server → client message ids."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


class TickType:
    BID_SIZE = 0
    BID = 1
    ASK = 2
    ASK_SIZE = 3
    LAST = 4
    LAST_SIZE = 5
    HIGH = 6
    LOW = 7
    VOLUME = 8
    CLOSE = 9


# Error texts as a gateway words them (reqId -1 unless noted).
ERROR_TEXTS = {
    100: "Max rate of messages per second has been exceeded:max=50 rec={rec} (1)",
    103: "Duplicate order id",
    200: "No security definition has been found for the request",
    202: "Order Canceled - reason:",
    300: "Can't find EId with tickerId:{req_id}",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    354: "Requested market data is not subscribed.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and TWS has been restored- data lost.",
    1102: "Connectivity between IB and TWS has been restored- data maintained.",
    2104: "Market data farm connection is OK:usfarm",
    2106: "HMDS data farm connection is OK:ushmds",
    2158: "Sec-def data farm connection is OK:secdefil",
    10147: "OrderId {order_id} that needs to be cancelled is not found.",
    10268: "The 'EtradeOnly' order attribute is not supported.",
    10269: "The 'firmQuoteOnly' order attribute is not supported.",
}

STARTUP_NOTICES = (2104, 2106, 2158)


def connection_time_text(now: float | None = None) -> str:
    """The connection time string of the version reply, e.g. ``20261130 07:45:00 Greenwich Mean Time``."""
    t = time.gmtime(time.time() if now is None else now)
    return time.strftime("%Y%m%d %H:%M:%S", t) + " Greenwich Mean Time"


def version_reply(now: float | None = None) -> List[Field]:
    return [SERVER_VERSION, connection_time_text(now)]


def quantity_field(value: float) -> Field:
    """Quantities go out as integers when integral (9.81 decodes some sizes with int())."""
    return int(value) if float(value).is_integer() else value


def err_msg(req_id: int, code: int, text: str) -> List[Field]:
    return [Out.ERR_MSG, 2, req_id, code, text]


def managed_accounts(accounts: tuple[str, ...]) -> List[Field]:
    return [Out.MANAGED_ACCTS, 1, ",".join(accounts)]


def next_valid_id(order_id: int) -> List[Field]:
    return [Out.NEXT_VALID_ID, 1, order_id]


def current_time(epoch: int) -> List[Field]:
    return [Out.CURRENT_TIME, 1, epoch]


def parse_version_request(payload: bytes) -> tuple[int, int, str]:
    """Parse ``v{min}..{max}[ options]`` (or a bare ``v{n}``). Raises ValueError when malformed."""
    text = payload.decode("ascii")
    if not text.startswith("v"):
        raise ValueError(f"bad version request {text!r}")
    head, _, options = text[1:].partition(" ")
    low_text, sep, high_text = head.partition("..")
    low = int(low_text)
    high = int(high_text) if sep else low
    if low <= 0 or high < low:
        raise ValueError(f"bad version range {text!r}")
    return low, high, options
