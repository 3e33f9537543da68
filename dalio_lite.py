"""DalioLite: an automated All Weather portfolio manager, run once a day.

Every state write goes through backup_manager.atomic_write and is backed up at
once; at start-up, missing or corrupt state is restored from backups before any
decision is taken. Where state cannot be restored but evidence says it existed,
DalioLite refuses to trade (exit 3) and says which command to run. Every broker
call is bounded; a broker that fails ends the run with one line (exit 4) and no
rebalance recorded. SIGTERM or Ctrl-C stops a run at its next safe place: no broker
call, intent or order after the one in flight (exit 143 or 130 when that cut it short).

    python dalio_lite.py [--config PATH] [--dry-run] [--force-rebalance]
                         [--accept-fresh-state] [--switch-broker] [--status]
    python dalio_lite.py [--config PATH] [--dry-run] --every 24h   # a Procfile's worker
    python dalio_lite.py [--config PATH] --schedule cron|launchd|systemd [--system]

Variables of the secrets file beside config.yaml (.env, see dalio_schedule.py) that the
environment does not set are read at start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import select
import signal
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

from backup_manager import (
    HOST_RECORD,
    INTENT_LEASE,
    BackupError,
    BackupManager,
    ConfigError,
    HostFacts,
    InvalidStateError,
    LockTimeout,
    OrderFact,
    PointKind,
    Site,
    StateUnrecoverableError,
    atomic_write,
    claim_intent,
    file_lock,
    parse_iso_timestamp,
    read_state_file,
    recover,
    register_validator,
    settle,
    unrecorded,
    validate_content,
    writer_id,
)
from backup_manager.config import (
    backup_options,
    check_keys,
    flag,
    load_config_file,
    number,
    text_or_none,
    timeout,
    whole_number,
)
from dalio_schedule import ENV_FILE, PLATFORMS, load_env_file, print_schedule

log = logging.getLogger("dalio_lite")

LAST_REBALANCE = "last_rebalance.json"
PAPER_ACCOUNT = "paper_account.json"
AUTOPILOT_STATUS = HOST_RECORD  # the Site reads DalioLite's record of its backups here
EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_BROKER = 0, 1, 3, 4
# Every order DalioLite places carries a client order id that starts with this, then
# the writer (backups/.writer) and the run that placed it, then a nonce.
CLIENT_ID_PREFIX = "daliolite-"
RECONCILE_MARGIN = timedelta(hours=1)  # orders a little before the newest point are asked too
MAX_CLIENT_ID = 48  # Alpaca's limit
# A 4xx answer judges the order (a halted symbol, buying power), except these: the
# keys refused, a request timeout, a rate limit. The order was never looked at.
NOT_A_REJECTION = frozenset({401, 408, 429})
PAPER_FILLS = ("immediate", "next_run")

DEFAULT_CONFIG: dict[str, Any] = {
    "allocation": {"VTI": 0.40, "TLT": 0.30, "GLD": 0.20, "DBC": 0.10},
    "rebalancing": {"drift_threshold": 0.05, "min_days_between": 30, "min_trade_usd": 50.0},
    "broker": {"kind": "paper", "starting_cash": 100000.0,
               "prices": {"VTI": 250.0, "TLT": 90.0, "GLD": 190.0, "DBC": 22.0},
               "paper": True, "base_url": None, "connect_timeout_seconds": 5,
               "read_timeout_seconds": 20, "paper_fills": "immediate"},
    "state": {"dir": "state"},
    "concurrency": {"lock_timeout_seconds": 30},
    "backup": None,
}


STATE_FILES = (LAST_REBALANCE, PAPER_ACCOUNT, AUTOPILOT_STATUS)


def broker_state_files(kind: str) -> tuple[str, ...]:
    """DalioLite's state with this broker: the paper account is state only when the
    paper broker keeps it; Alpaca keeps its own account."""
    return STATE_FILES if kind == "paper" else (LAST_REBALANCE, AUTOPILOT_STATUS)


class BrokerError(Exception):
    """A broker call failed or went unanswered: the run stops and records no rebalance."""


class OrderRejected(BrokerError):
    """The broker refused an order and holds none under its id: not placed, and recorded
    as rejected, so no run orders it again in that rebalance."""

    def __init__(self, message: str, client_order_id: str):
        super().__init__(message)
        self.client_order_id = client_order_id


class Stopped(BaseException):
    """A stop was asked for (SIGTERM, Ctrl-C): raised before a broker call, an intent or
    an order, never inside one. A BaseException, as KeyboardInterrupt is, so that no
    handler of broker failures takes it for one (a settling run would refuse)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process the signal ended


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """SIGTERM (what a platform sends before a redeploy) or SIGINT (Ctrl-C), noted and
    honoured at the next safe place: before a broker call, an intent or an order (the
    call in flight finishes: every call is bounded), or at once in the loop's sleep.
    A second signal is the same request; SIGKILL is what stops a run at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._wake: tuple[int, int] | None = None  # written by the handler, ends a sleep

    @contextlib.contextmanager
    def installed(self) -> Any:
        """Take SIGTERM and SIGINT for this request while the block runs."""
        self._wake = os.pipe()
        os.set_blocking(self._wake[1], False)
        before = {signum: signal.signal(signum, self._note) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in before.items():
                signal.signal(signum, handler)
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def _note(self, signum: int, frame: Any) -> None:
        # Only note it: logging from a handler can deadlock on the logging lock.
        if self.signum is None:
            self.signum = signum
        with contextlib.suppress(OSError):
            os.write(self._wake[1], b"\0")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "nothing"

    def check(self, before: str) -> None:
        """Raise Stopped if a stop was asked for: `before` says what is not started."""
        if self.signum is not None:
            raise Stopped(self.signum, f"stopped by {self.name} before {before}")

    def sleep(self, seconds: float) -> bool:
        """Sleep `seconds`, less if a stop is asked for; True when one is."""
        if seconds > 0 and self.signum is None:
            select.select([self._wake[0]], [], [], seconds)
        return self.signum is not None


# --- configuration ------------------------------------------------------------------


@dataclass
class Config:
    allocation: dict[str, float]
    drift_threshold: float
    min_days_between: int
    min_trade_usd: float
    broker: dict[str, Any]
    state_dir: Path
    lock_timeout: float
    backup: dict[str, Any]


def load_config(path: str | Path) -> Config:
    """Read and check config.yaml; relative paths resolve against its folder."""
    path = Path(path).resolve()
    doc = load_config_file(path)
    return parse_config(doc, path.parent)


def parse_config(doc: dict[str, Any], base: Path) -> Config:
    check_keys(doc, DEFAULT_CONFIG, "config")
    sections = {}
    for name, default in DEFAULT_CONFIG.items():
        given = doc.get(name)
        if name in ("allocation", "backup"):
            sections[name] = given if given is not None else default
            continue
        if given is not None and not isinstance(given, dict):
            raise ConfigError(f"{name} must be a mapping of keys, got {given!r}")
        check_keys(given or {}, default, name)
        sections[name] = {**default, **(given or {})}
    reb, brk = sections["rebalancing"], sections["broker"]
    state_dir = sections["state"]["dir"]
    if not isinstance(state_dir, str) or not state_dir:
        raise ConfigError(f"state.dir must be a folder path, got {state_dir!r}")
    backup = backup_options(sections["backup"], base)
    backup["state_files"] = _state_files(backup["state_files"], base / state_dir, brk["kind"])
    return Config(
        allocation=_allocation(sections["allocation"]),
        drift_threshold=number("rebalancing.drift_threshold", reb["drift_threshold"]),
        min_days_between=whole_number("rebalancing.min_days_between", reb["min_days_between"]),
        min_trade_usd=number("rebalancing.min_trade_usd", reb["min_trade_usd"]),
        broker=_broker_section(brk),
        state_dir=base / state_dir,
        lock_timeout=number("concurrency.lock_timeout_seconds",
                            sections["concurrency"]["lock_timeout_seconds"]),
        backup=backup,
    )


def _state_files(configured: list[Path], state_dir: Path, kind: str) -> list[Path]:
    """The broker's state files unless configured; none outside state.dir, where
    DalioLite reads and writes them (a backup of a file it never reads protects nothing).
    With a broker that keeps its own account, a listed paper_account.json is left out:
    it is then no state of DalioLite's, never required and never lost."""
    needed = broker_state_files(kind)
    if not configured:
        return [state_dir / name for name in needed]
    for path in configured:
        if path.resolve().parent != state_dir.resolve():
            raise ConfigError(f"backup.state_files names {path}, which is not in state.dir "
                              f"({state_dir}): DalioLite keeps its state there")
    left_out = sorted(set(needed) - {p.name for p in configured})
    if left_out:
        raise ConfigError(f"backup.state_files leaves out {', '.join(left_out)}: DalioLite "
                          f"writes and must recover {', '.join(needed)} with broker.kind "
                          f"{kind}; leave the key out for the default")
    return [p for p in configured if p.name in needed or p.name not in STATE_FILES]


def _allocation(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"allocation must map tickers to weights, got {value!r}")
    weights = {str(k): number(f"allocation.{k}", v) for k, v in value.items()}
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"allocation weights must sum to 1.0, got {total:g}")
    return weights


def _broker_section(brk: dict[str, Any]) -> dict[str, Any]:
    if brk["kind"] not in ("paper", "alpaca"):
        raise ConfigError(f"broker.kind must be paper or alpaca, got {brk['kind']!r}")
    number("broker.starting_cash", brk["starting_cash"])
    if not isinstance(brk["prices"], dict):
        raise ConfigError(f"broker.prices must map tickers to prices, got {brk['prices']!r}")
    for ticker, price in brk["prices"].items():
        if number(f"broker.prices.{ticker}", price) <= 0:
            raise ConfigError(f"broker.prices.{ticker} must be > 0, got {price!r}")
    flag("broker.paper", brk["paper"])
    brk["base_url"] = _base_url(brk["base_url"])
    for key in ("connect_timeout_seconds", "read_timeout_seconds"):
        brk[key] = timeout(f"broker.{key}", brk[key])
    if brk["paper_fills"] not in PAPER_FILLS:
        raise ConfigError(f"broker.paper_fills must be immediate or next_run, got "
                          f"{brk['paper_fills']!r}")
    return brk


def _base_url(value: Any) -> str | None:
    """broker.base_url: Alpaca's own endpoint when unset; otherwise the root alpaca-py
    puts /v2/... after (a local server, a proxy, a simulator)."""
    url = text_or_none("broker.base_url", value)
    if url is None:
        return None
    url = url.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url) or url.endswith("/v2"):
        raise ConfigError(f"broker.base_url must be an http:// or https:// URL without the "
                          f"/v2 that alpaca-py adds, e.g. https://paper-api.alpaca.markets; "
                          f"got {value!r}")
    return url


# --- brokers ----------------------------------------------------------------------


@dataclass(frozen=True)
class MarketOrder:
    """A notional market order, as alpaca-py's MarketOrderRequest carries it. The run
    that places it gives it its client order id (DalioLite._with_client_order_ids)."""

    symbol: str
    notional: float
    side: str  # "buy" or "sell"
    client_order_id: str = ""


@dataclass(frozen=True)
class OpenOrder:
    """An order the broker holds open: what of it is still unfilled, in dollars (None
    for an order by share count, whose value the planner takes from the position)."""

    symbol: str
    side: str
    client_order_id: str
    status: str
    unfilled: float | None
    unfilled_qty: float | None = None


class Broker(Protocol):
    """What DalioLite asks of a broker. Each call raises BrokerError when the broker
    fails or does not answer in time."""

    name: str

    def account_id(self) -> str | None: ...  # which account the history belongs to
    def get_account(self) -> Any: ...  # .cash, .portfolio_value, .equity
    def get_all_positions(self) -> list[Any]: ...  # .symbol, .market_value, .qty
    def get_open_orders(self) -> list[OpenOrder]: ...
    def get_order_by_client_id(self, client_order_id: str) -> Any | None: ...
    def orders_since(self, after: datetime) -> list[OrderFact]: ...  # every status
    def submit_order(self, order_data: MarketOrder) -> Any: ...


class PaperBroker:
    """An offline, deterministic broker: prices from config, account in a state file.

    `persist` is called with the account document after every change, so the
    account is written atomically and backed up like any other state. Orders carry
    client order ids, which the broker reports, finds, and refuses to take twice, as
    Alpaca does. With fills="next_run" an order stays open until the end of the next
    run (which counts it as open), as a market order placed after the close waits for
    the open; "immediate" fills it when it is placed.
    """

    name = "paper broker"

    def __init__(self, prices: dict[str, float], account: dict[str, Any], persist: Any, *,
                 fills: str = "immediate"):
        self.prices = {k: float(v) for k, v in prices.items()}
        self.cash = float(account["cash"])
        self.shares = {k: float(v) for k, v in account.get("positions", {}).items()}
        self.account_orders = [dict(o) for o in account.get("orders", [])]
        self.fills = fills
        self.persist = persist
        self.earlier_open = [o["client_order_id"] for o in self.account_orders
                             if o["status"] == "open"]

    @staticmethod
    def new_account(starting_cash: float) -> dict[str, Any]:
        return {"cash": float(starting_cash), "positions": {}}

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "cash": round(self.cash, 2),
            "positions": {k: round(v, 6) for k, v in sorted(self.shares.items()) if v}}
        if self.account_orders:  # an account without orders reads as it always did
            doc["orders"] = self.account_orders
        return doc

    def account_id(self) -> str | None:
        return None  # one paper account per state folder

    def get_account(self) -> Any:
        value = self.cash + sum(p.market_value_f for p in self._positions())
        return SimpleNamespace(cash=f"{self.cash:.2f}", portfolio_value=f"{value:.2f}",
                               equity=f"{value:.2f}")

    def get_all_positions(self) -> list[Any]:
        return [SimpleNamespace(symbol=p.symbol, market_value=f"{p.market_value_f:.2f}",
                                qty=f"{p.qty:.6f}") for p in self._positions()]

    def get_open_orders(self) -> list[OpenOrder]:
        return [OpenOrder(o["symbol"], o["side"], o["client_order_id"], "open",
                          round(o["notional"] - o["filled"], 2))
                for o in self.account_orders if o["status"] == "open"]

    def get_order_by_client_id(self, client_order_id: str) -> Any | None:
        found = next((o for o in self.account_orders
                      if o["client_order_id"] == client_order_id), None)
        return SimpleNamespace(**found) if found else None

    def orders_since(self, after: datetime) -> list[OrderFact]:
        return [_paper_fact(o) for o in self.account_orders
                if parse_iso_timestamp(o["submitted_at"]) > after]

    def _positions(self) -> list[Any]:
        return [SimpleNamespace(symbol=s, qty=q, market_value_f=q * self._price(s))
                for s, q in sorted(self.shares.items()) if q]

    def _price(self, symbol: str) -> float:
        if symbol not in self.prices:
            raise ValueError(f"paper broker has no price for {symbol}; add broker.prices")
        return self.prices[symbol]

    def submit_order(self, order_data: MarketOrder) -> Any:
        self._price(order_data.symbol)
        client_order_id = order_data.client_order_id or f"paper-{os.urandom(8).hex()}"
        if self.get_order_by_client_id(client_order_id) is not None:
            raise BrokerError(f"{self.name}: placing order {client_order_id} failed: that "
                              "client order id was used before")
        order = {"client_order_id": client_order_id, "symbol": order_data.symbol,
                 "side": order_data.side, "notional": round(order_data.notional, 2),
                 "filled": 0.0, "status": "open",
                 "submitted_at": datetime.now(UTC).isoformat()}
        self.account_orders.append(order)
        if self.fills == "immediate":
            self._fill(order)
        self.persist(self.document())
        return SimpleNamespace(**order)

    def fill_earlier_orders(self) -> None:
        """Fill what earlier runs left open (paper_fills: next_run), at the end of a run."""
        due = [o for o in self.account_orders
               if o["status"] == "open" and o["client_order_id"] in self.earlier_open]
        for order in due:
            self._fill(order)
        if due:
            log.info("paper broker: filled %d order(s) left open by the last run", len(due))
            self.persist(self.document())

    def _fill(self, order: dict[str, Any]) -> None:
        price = self._price(order["symbol"])
        amount = round(order["notional"] - order["filled"], 2)
        if order["side"] == "buy":
            amount = min(amount, round(self.cash, 2))
            self.cash -= amount
            self.shares[order["symbol"]] = self.shares.get(order["symbol"], 0.0) + amount / price
        else:
            held = self.shares.get(order["symbol"], 0.0)
            qty = min(amount / price, held)
            self.shares[order["symbol"]] = held - qty
            amount = qty * price
            self.cash += amount
        order.update(filled=round(order["filled"] + amount, 2), status="filled")


class AlpacaBroker:
    """Adapter to alpaca-py's TradingClient (paper trading unless told otherwise): every
    call is bounded in time and never retried, and every failure is a BrokerError that
    names the broker and the call."""

    PAGE = 500  # Alpaca's largest page of orders

    def __init__(self, client: Any = None, *, paper: bool = True, base_url: str | None = None,
                 timeouts: tuple[float, float] = (5.0, 20.0)):
        self.name = f"alpaca broker at {base_url}" if base_url else \
            f"alpaca broker ({'paper' if paper else 'live'} trading)"
        self.timeouts = timeouts
        self.client = client or self._make_client(paper, base_url, timeouts)

    @staticmethod
    def _make_client(paper: bool, base_url: str | None, timeouts: tuple[float, float]) -> Any:
        try:
            from alpaca.trading.client import TradingClient
        except ImportError:
            raise ConfigError("broker.kind alpaca needs alpaca-py: "
                              "pip install 'daliolite[alpaca]'") from None
        key, secret = os.environ.get("ALPACA_API_KEY"), os.environ.get("ALPACA_SECRET_KEY")
        if not key or not secret:
            raise ConfigError("broker.kind alpaca needs ALPACA_API_KEY and ALPACA_SECRET_KEY "
                              "in the environment")
        client = TradingClient(key, secret, paper=paper, url_override=base_url)
        # alpaca-py's requests Session has no timeout, and its RESTClient retries 429 and
        # 504 answers, order submissions included (retry_attempts=0 means "the default,
        # 3"). A broker that hangs would hold the daily run and its run lock forever; a
        # 504 sent after the order was taken would place it twice. So every request is
        # bounded and none is retried: submit_order asks for the order by its id instead.
        client._retry, client._retry_codes = 0, []
        client._session.request = functools.partial(client._session.request, timeout=timeouts)
        return client

    def _call(self, what: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:  # whatever the client raises is the broker failing
            raise BrokerError(f"{self.name}: {what} failed: "
                              f"{_describe(exc, self.timeouts)}") from None

    def account_id(self) -> str:
        return str(self.get_account().id)

    def get_account(self) -> Any:
        return self._call("reading the account", self.client.get_account)

    def get_all_positions(self) -> list[Any]:
        return self._call("reading the positions", self.client.get_all_positions)

    def get_open_orders(self) -> list[OpenOrder]:
        from alpaca.common.enums import Sort
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        found: dict[Any, Any] = {}
        after = None
        while True:
            page = self._call("listing the open orders", self.client.get_orders,
                              GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=self.PAGE,
                                               after=after, direction=Sort.ASC))
            found.update((o.id, o) for o in page)
            if len(page) < self.PAGE:
                return [_open_order(o) for o in found.values()]
            after = page[-1].submitted_at

    def orders_since(self, after: datetime) -> list[OrderFact]:
        from alpaca.common.enums import Sort
        from alpaca.trading.enums import QueryOrderStatus
        from alpaca.trading.requests import GetOrdersRequest

        found: dict[Any, Any] = {}
        while True:
            page = self._call("listing the orders", self.client.get_orders,
                              GetOrdersRequest(status=QueryOrderStatus.ALL, limit=self.PAGE,
                                               after=after, direction=Sort.ASC))
            found.update((o.id, o) for o in page)
            if len(page) < self.PAGE:
                return [_alpaca_fact(o) for o in found.values()]
            after = page[-1].submitted_at

    def get_order_by_client_id(self, client_order_id: str) -> Any | None:
        try:
            return self.client.get_order_by_client_id(client_order_id)
        except Exception as exc:  # as in _call; "not found" is an answer
            if getattr(exc, "status_code", None) == 404:
                return None
            raise BrokerError(f"{self.name}: asking for order {client_order_id} failed: "
                              f"{_describe(exc, self.timeouts)}") from None

    def submit_order(self, order_data: MarketOrder) -> Any:
        """Place the order. After any error or timeout the broker may hold it all the
        same (it took the order, then the answer was lost): ask for it by its client
        order id before deciding anything, and never send it a second time."""
        order = order_data
        try:
            return self.client.submit_order(order_data=self._request(order))
        except Exception as exc:  # as in _call
            failure = _describe(exc, self.timeouts)
            status = getattr(exc, "status_code", None)
        what = f"order {order.client_order_id} ({order.side} {order.symbol} " \
               f"${order.notional:.2f})"
        try:
            found = self.get_order_by_client_id(order.client_order_id)
        except BrokerError as exc:
            raise BrokerError(f"{exc}, after placing it failed ({failure}): look for "
                              f"{order.client_order_id} among the account's orders before "
                              "the next run") from None
        if found is None:
            message = f"{self.name}: placing {what} failed: {failure}; the broker holds " \
                      "no order under that id, so it was not placed"
            if _is_rejection(status):
                raise OrderRejected(f"{message}; recorded as rejected, it is not ordered "
                                    "again in this rebalance", order.client_order_id)
            raise BrokerError(message)
        if (found.symbol, _side(found)) != (order.symbol, order.side):
            raise BrokerError(f"{self.name}: placing {what} failed: {failure}; the broker "
                              f"holds another order under that id ({_side(found)} "
                              f"{found.symbol})")
        log.warning("%s: placing %s failed (%s), but the broker holds it (%s): it is "
                    "placed, and not sent again", self.name, what, failure, found.status)
        return found

    @staticmethod
    def _request(order: MarketOrder) -> Any:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        side = OrderSide.BUY if order.side == "buy" else OrderSide.SELL
        return MarketOrderRequest(symbol=order.symbol, notional=round(order.notional, 2),
                                  side=side, time_in_force=TimeInForce.DAY,
                                  client_order_id=order.client_order_id)


def _is_rejection(status: Any) -> bool:
    """An HTTP status by which the broker refused the order itself (see NOT_A_REJECTION)."""
    return isinstance(status, int) and 400 <= status < 500 and status not in NOT_A_REJECTION


def _side(order: Any) -> str:
    return getattr(order.side, "value", order.side)


def _alpaca_fact(order: Any) -> OrderFact:
    """One of alpaca-py's Orders, as the start-up rules read it."""
    return OrderFact(order.client_order_id, getattr(order.status, "value", order.status),
                     order.submitted_at, {"symbol": order.symbol, "side": _side(order),
                                          "notional": str(order.notional)})


def _paper_fact(order: dict[str, Any]) -> OrderFact:
    return OrderFact(order["client_order_id"], order["status"],
                     parse_iso_timestamp(order["submitted_at"]),
                     {"symbol": order["symbol"], "side": order["side"],
                      "notional": order["notional"]})


def _open_order(order: Any) -> OpenOrder:
    """What is still unfilled of one of alpaca-py's Orders."""
    filled_qty = float(order.filled_qty or 0)
    status = getattr(order.status, "value", order.status)
    if order.notional is not None:
        filled = filled_qty * float(order.filled_avg_price or 0)
        return OpenOrder(order.symbol, _side(order), order.client_order_id, status,
                         max(float(order.notional) - filled, 0.0))
    return OpenOrder(order.symbol, _side(order), order.client_order_id, status, None,
                     max(float(order.qty or 0) - filled_qty, 0.0))


def _describe(exc: Exception, timeouts: tuple[float, float]) -> str:
    """A broker call's failure in a few words: no traceback, no object addresses."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within {timeouts[0]:g} s (broker.connect_timeout_seconds)"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within {timeouts[1]:g} s (broker.read_timeout_seconds)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else exc
        reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError
        if isinstance(reason, Exception) and reason.args and \
                isinstance(reason.args[-1], Exception):
            reason = reason.args[-1]  # urllib3's ProtocolError("Connection aborted.", cause)
        errno_text = re.search(r"\[Errno -?\d+\] (.*)", str(reason))
        return f"cannot connect: {errno_text[1]}" if errno_text else \
            f"the connection failed: {reason}"
    status = getattr(exc, "status_code", None)
    if status is not None:
        try:
            message = json.loads(str(exc))["message"]
        except (ValueError, KeyError, TypeError):
            message = " ".join(str(exc).split())[:200]
        return f"HTTP {status}: {message}"
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"unexpected answer ({type(exc).__name__}: {first})"


def _check_paper_account(doc: Any) -> None:
    cash = doc.get("cash")
    if isinstance(cash, bool) or not isinstance(cash, (int, float)) or cash < 0:
        raise InvalidStateError(f"cash must be a number >= 0, got {cash!r}")
    positions = doc.get("positions")
    if not isinstance(positions, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in positions.values()):
        raise InvalidStateError("positions must map tickers to share counts")
    orders = doc.get("orders", [])
    if not isinstance(orders, list) or not all(
            isinstance(o, dict) and PAPER_ORDER_KEYS <= set(o) for o in orders):
        raise InvalidStateError("orders must be a list of orders, each with "
                                + ", ".join(sorted(PAPER_ORDER_KEYS)))


PAPER_ORDER_KEYS = frozenset({"client_order_id", "symbol", "side", "notional", "filled",
                              "status"})
register_validator(PAPER_ACCOUNT, _check_paper_account)


# --- the daily check ------------------------------------------------------------------


@dataclass
class RunDecision:
    outcome: str  # rebalanced, no_action, refused, error, stopped, switched_broker
    reason: str
    orders: list[MarketOrder]


class DalioLite:
    def __init__(self, config_path: str | Path = "config.yaml", *, broker: Broker | None = None,
                 accept_fresh_state: bool = False, accept_rollback: bool = False,
                 take_over: bool = False, stop: StopRequest | None = None):
        self.config_path = Path(config_path).resolve()
        doc = load_config_file(self.config_path)
        self.config = parse_config(doc, self.config_path.parent)
        self.state_dir = self.config.state_dir
        # One Site for this installation: its backups, run lock, record and commands.
        self.site = Site(self.config_path, doc=doc, state_files=self.config.backup[
            "state_files"], host_program=Path(__file__).resolve())
        self.backup_manager = self.site.manager
        self.accept_fresh_state = accept_fresh_state
        self.accept_rollback = accept_rollback
        self.take_over = take_over
        self._planned: dict[str, bytes | None] = {}
        self._broker = broker
        self.last_backup: str | None = None
        self.last_backup_error: str | None = None
        self.caught_up = False
        self.fresh_start: str | None = None
        self.run_started = datetime.now(UTC)
        self.broker_record: dict[str, Any] | None = None  # set by _take_broker_record
        self._configured: dict[str, Any] | None = None
        self._broker_failure: BrokerError | None = None
        self._intents: list[int] = []  # the intents this run claimed
        self._claimed_at: datetime | None = None  # when the newest of them was
        self._run_details: dict[str, Any] = {}
        self.stop = stop or StopRequest()  # never asked for unless main() installs it

    def state_path(self, name: str) -> Path:
        return self.state_dir / name

    # state I/O -------------------------------------------------------------------------

    def save_state(self, name: str, doc: dict[str, Any]) -> None:
        """Write a state file atomically, then back it up. A failed backup is logged
        and recorded, never raised: the state itself was saved."""
        path = self.state_path(name)
        data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
        validate_content(name, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, durable=self.config.backup["durable"])
        self._back_up(path)

    def _back_up(self, path: Path) -> None:
        # The state is saved: whatever the backup raises must not stop the run half-way
        # (an order sequence), so it is logged with its traceback and recorded.
        try:
            backup = self.backup_manager.backup_state_file(path)
        except Exception as exc:
            self.last_backup_error = f"{datetime.now(UTC).isoformat()} {path.name}: {exc}"
            log.exception("BACKUP FAILED for %s (the state itself was saved): %s", path, exc)
            return
        if backup is not None:
            self.last_backup = backup.name
            log.info("backup written: %s", backup.name)

    def _commit_failed(self, exc: Exception) -> None:
        """The run's restore point failed (backups/ full or gone): the state is saved, so
        record the failure where status sees it, and go on (the next start catches up)."""
        self.last_backup_error = f"{datetime.now(UTC).isoformat()} restore point: {exc}"
        path = self.state_path(AUTOPILOT_STATUS)
        try:
            doc = json.loads(read_state_file(path)[0])
            doc["last_backup_error"] = self.last_backup_error
            atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(),
                         durable=self.config.backup["durable"])
        except (OSError, ValueError) as error:
            log.error("cannot record the failed restore point in %s: %s", path, error)

    def _save_rebalance_date(self, when: datetime) -> None:
        """Record the rebalance atomically, then back it up at once (the design card's
        hook: losing this file makes DalioLite trade again)."""
        self.save_state(LAST_REBALANCE, {"timestamp": when.astimezone(UTC).isoformat()})

    def read_state(self, name: str) -> dict[str, Any] | None:
        if name in self._planned:  # a dry run decides on what recovery would install
            data = self._planned[name]
            return None if data is None else json.loads(data)
        try:
            data = read_state_file(self.state_path(name))[0]  # a FIFO never blocks it
        except FileNotFoundError:
            return None
        validate_content(name, data)
        return json.loads(data)

    def last_rebalance(self) -> datetime | None:
        doc = self.read_state(LAST_REBALANCE)
        return parse_iso_timestamp(doc["timestamp"]) if doc else None

    # start-up recovery ------------------------------------------------------------------

    def recover_state(self, *, dry_run: bool = False, switching: bool = False) -> Any:
        """Make every configured state file valid or a first run (the package's start-up
        guard decides; DalioLite gives its records and its broker account), and return
        the guard's report. Raises Refusal (a StateUnrecoverableError) when it must not
        trade."""
        files = self.backup_manager.state_files
        report = recover(self.backup_manager, files, facts=self._facts(),
                         accept_fresh=self.accept_fresh_state,
                         accept_rollback=self.accept_rollback, accept_identity=switching,
                         accept_takeover=self.take_over, dry_run=dry_run)
        self.caught_up = report.caught_up
        self._planned = report.planned if dry_run else {}
        for path, moved in report.fresh.items():
            log.warning("--accept-fresh-state: %s starts over; moved aside: %s", path,
                        ", ".join(moved) or "nothing")
            if path.name == LAST_REBALANCE:
                self.fresh_start = datetime.now(UTC).isoformat()
        if report.backups_problem:
            self.last_backup_error = f"{datetime.now(UTC).isoformat()} backups folder: " \
                                     f"{report.backups_problem}"
        for error in report.errors:
            self.last_backup_error = f"{datetime.now(UTC).isoformat()} {error}"
        return report

    def _facts(self) -> HostFacts:
        """What DalioLite's own records say, and how a person runs its commands."""
        on_record = self._rebalance_on_record()
        records = {} if on_record is None else {LAST_REBALANCE: (
            on_record, f"{AUTOPILOT_STATUS} records a rebalance at {on_record.isoformat()}")}
        host = self.site.host_command
        return HostFacts(records=records, evidence=self._evidence,
                         identity=self._identity_or_none(),
                         describe=_identity_label,
                         backup_command=self.site.command(""),
                         commands={"run": host(),
                                   "accept_fresh": host("--accept-fresh-state"),
                                   "accept_rollback": host("--accept-rollback"),
                                   "accept_identity": host("--switch-broker"),
                                   "accept_takeover": host("--take-over")})

    def _evidence(self, path: Path) -> str | None:
        """DalioLite's own records that a lost state file existed. A paper account is
        evidence, and needs any, only where the paper broker made the history (since the
        switch to it, if it was switched to)."""
        if path.name not in (LAST_REBALANCE, PAPER_ACCOUNT):
            return None
        broker = self._previous_status().get("broker")
        broker = broker if isinstance(broker, dict) else {"kind": "paper"}
        on_record = self._rebalance_on_record()
        if path.name == PAPER_ACCOUNT:
            on_record = _on_account(on_record, broker) if broker.get("kind") == "paper" \
                else None
        if on_record is not None:
            return f"{AUTOPILOT_STATUS} records a rebalance at {on_record.isoformat()}"
        if path.name == PAPER_ACCOUNT or self.config.broker["kind"] != "paper":
            return None
        try:
            account = self.read_state(PAPER_ACCOUNT) or {}
        except (InvalidStateError, OSError):
            account = {}
        if any(account.get("positions", {}).values()) and \
                not self._previous_status().get("fresh_start"):
            return f"{PAPER_ACCOUNT} holds positions, which only a rebalance buys"
        return None

    def _rebalance_on_record(self) -> datetime | None:
        """The last rebalance autopilot_status.json knows of (older status files: from
        next_eligible_rebalance, or a last outcome of rebalanced)."""
        status = self._previous_status()
        try:
            if status.get("rebalance_on_record"):
                return parse_iso_timestamp(status["rebalance_on_record"])
            if status.get("next_eligible_rebalance"):
                return parse_iso_timestamp(status["next_eligible_rebalance"]) - \
                    timedelta(days=self.config.min_days_between)
            if status.get("outcome") == "rebalanced" and status.get("last_run"):
                return parse_iso_timestamp(status["last_run"])
        except InvalidStateError:
            return None
        return None

    # broker ---------------------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            brk = self.config.broker
            if brk["kind"] == "alpaca":
                self._broker = AlpacaBroker(
                    paper=brk["paper"], base_url=brk["base_url"],
                    timeouts=(brk["connect_timeout_seconds"], brk["read_timeout_seconds"]))
            else:
                account = self.read_state(PAPER_ACCOUNT) or \
                    PaperBroker.new_account(brk["starting_cash"])
                self._broker = PaperBroker(brk["prices"], account,
                                           lambda doc: self.save_state(PAPER_ACCOUNT, doc),
                                           fills=brk["paper_fills"])
        return self._broker

    @property
    def _broker_unless_stopped(self) -> Broker:
        """The broker, for one more call: none is started once a stop is asked for. The
        call in flight finishes (every call is bounded), so a stop waits for one call."""
        self.stop.check("its next broker call")
        return self.broker

    def _configured_broker(self) -> dict[str, Any]:
        """The broker and account config.yaml points at (Alpaca is asked for its account;
        the paper broker has one account per state folder, and its file is not read)."""
        kind = self.config.broker["kind"]
        return {"kind": kind, "account": None if kind == "paper" else
                self._broker_unless_stopped.account_id()}

    def _identity(self) -> dict[str, Any]:
        """Whom the history belongs to: every restore point records it, and the start-up
        guard refuses a history recorded under another account (a fact, not a rule)."""
        if self._configured is None:
            self._configured = self._configured_broker()
        return {"broker": self._configured["kind"], "account": self._configured["account"]}

    def _identity_or_none(self) -> dict[str, Any] | None:
        """The identity, or None when the broker cannot be asked: the run then stops at
        its first broker call, after recovery (and records why)."""
        try:
            return self._identity()
        except BrokerError as exc:
            self._broker_failure = exc
            return None

    def _take_broker_record(self) -> None:
        """The account's own record (when it became the history's: a last rebalance from
        before a switch does not count for it). A history from before DalioLite recorded
        its broker takes the configured one."""
        recorded = self._previous_status().get("broker")
        if isinstance(recorded, dict):
            self.broker_record = recorded
            return
        log.info("the history records no broker yet: it belongs to %s from now on",
                 _broker_label(self._configured_broker()))
        self.broker_record = {**self._configured_broker(), "since": None}

    def switch_broker(self) -> str:
        """Make the configured broker account the one this history belongs to, on purpose:
        the old history is kept (its last rebalance stays on record, and its files stay
        held by their backups); the new account starts with no last rebalance."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.site.run_lock, self.config.lock_timeout, "DalioLite run lock"):
            self.run_started = datetime.now(UTC)
            report = self.recover_state(switching=True)
            configured = self._configured_broker()
            recorded = self._previous_status().get("broker")
            recorded = recorded if isinstance(recorded, dict) else None
            if report.identity == self._identity():
                return f"the history already belongs to {_broker_label(configured)}: " \
                       "nothing to switch"
            self.broker_record = {**configured, "since": self.run_started.isoformat(),
                                  "switched_from": recorded}
            last = self.last_rebalance()
            reason = (f"switched on purpose to {_broker_label(configured)} from "
                      f"{_broker_label(recorded) if recorded else 'an unrecorded broker'}; "
                      + (f"the last rebalance on record ({last.isoformat()}) was made on the "
                         "old account and stays in the history; " if last else "")
                      + "the new account starts with no last rebalance, so drift decides "
                        "its first one")
            with self.backup_manager.changes(PointKind.SWITCH, f"switch of broker: {reason}",
                                             details={"identity": self._identity(),
                                                      "switched_from": report.identity},
                                             commit_failed=self._commit_failed):
                self._record(RunDecision("switched_broker", reason, []))
            return reason

    def _account_last_rebalance(self) -> datetime | None:
        """The last rebalance of the account the history now belongs to: one made before
        a deliberate switch of broker was made on the old account and does not count."""
        last = self.last_rebalance()
        counted = _on_account(last, self.broker_record or self._previous_status().get("broker"))
        if last is not None and counted is None:
            log.info("the last rebalance on record (%s) was made before the switch to %s: "
                     "it does not count for this account", last.isoformat(),
                     _broker_label(self.broker_record or {}))
        return counted

    # the daily check -------------------------------------------------------------------

    def _run_lock(self, dry_run: bool) -> Any:
        """The run lock. A dry run writes nothing, not even the lock file: it takes the
        lock where a run made it, and none where no run ever did."""
        if dry_run and not self.site.run_lock.exists():
            return contextlib.nullcontext()
        if not dry_run:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        return file_lock(self.site.run_lock, self.config.lock_timeout,
                         "DalioLite run lock")

    def run_daily_check(self, *, dry_run: bool = False, force: bool = False) -> RunDecision:
        """Recover state, settle what an earlier run's orders did, check the broker
        account, decide, trade if due, record the outcome. Holds the run lock throughout,
        so a cron run and a dashboard never rebalance twice. Orders are placed once:
        before the first, an intent naming them is claimed in every store; a broker that
        fails raises BrokerError, and no rebalance is recorded. A stop asked for (SIGTERM)
        starts no broker call and no order after it, records the run and raises Stopped."""
        with self._run_lock(dry_run):
            self.stop.check("the daily check: nothing was done")
            self.run_started = datetime.now(UTC)
            report = self.recover_state(dry_run=dry_run)
            try:
                if self._broker_failure is not None:
                    # An earlier run's intent open: the refusal names its orders.
                    settle(self.backup_manager, report.history, self._ask_broker,
                           self._facts(), dry_run=dry_run)
                    raise self._broker_failure
                self._take_broker_record()
                settlement = settle(self.backup_manager, report.history, self._ask_broker,
                                    self._facts(), dry_run=dry_run)
                if not dry_run:
                    self._reconcile(report.history)
                decision = self._decide(force, settlement)
            except (BrokerError, Stopped) as exc:
                if isinstance(exc, Stopped):
                    exc = Stopped(exc.signum, f"stopped by {self.stop.name} before deciding: "
                                  "no order was placed; the next run decides")
                if not dry_run:
                    known = {"identity": self._identity()} if self._configured else None
                    with self.backup_manager.changes(PointKind.RUN,
                                                     f"daily check: {_outcome(exc)} ({exc})",
                                                     details=known,
                                                     commit_failed=self._commit_failed):
                        self._record(RunDecision(_outcome(exc), str(exc), []))
                raise exc from None
            log.info("%sdecision: %s (%s)", "dry run: " if dry_run else "", decision.outcome,
                     decision.reason)
            if dry_run:
                return decision
            details = {"identity": self._identity(),
                       **(settlement.details() if settlement else {}), "settles": []}
            if settlement is not None and settlement.void:
                details["settles"] = settlement.sequences  # nothing of them was placed
            self._run_details = details
            # Every state file this run writes goes into one restore point, at the end.
            with self.backup_manager.changes(PointKind.RUN, f"daily check: {decision.outcome} "
                                                            f"({decision.reason})",
                                             details=details,
                                             commit_failed=self._commit_failed) as point:
                try:
                    if decision.outcome == "rebalanced":
                        self._trade(decision.orders, settlement)
                    if isinstance(self.broker, PaperBroker):
                        self.broker.fill_earlier_orders()
                except (BrokerError, Stopped) as exc:
                    point["reason"] = f"daily check: {_outcome(exc)} ({exc})"
                    self._record(RunDecision(_outcome(exc), str(exc), []))
                    raise
                self._record(decision)
            return decision

    def _ask_broker(self, client_order_id: str) -> OrderFact | None:
        """What the broker holds under a client order id (raises BrokerError when it
        cannot be asked): a fact for the package's settling rules."""
        if self._broker_failure is not None:
            raise self._broker_failure
        found = self._broker_unless_stopped.get_order_by_client_id(client_order_id)
        if found is None:
            return None
        if isinstance(self.broker, PaperBroker):
            return _paper_fact(vars(found))
        return _alpaca_fact(found)

    def _reconcile(self, history: Any) -> None:
        """The broker's history is evidence: orders of DalioLite's (its client order id
        prefix) since the newest restore point, or since the last rebalance on record if
        that is earlier (_unrecorded_since), that no point records mean a rebalance the
        state does not know of (a machine rebuilt from copies that never received its
        intent; backups/ lost).
        It is recorded as a point of kind reconciled, dated by the first
        of them, so no run trades before min_days_between counted from it."""
        newest = history.newest()
        since = self._unrecorded_since()
        if newest is not None:
            # A later point (a failed run's, a catch-up) does not mean the broker's older
            # orders were seen: look back to the last rebalance on record as well.
            since = min(since, newest.time - RECONCILE_MARGIN)
        mine = [o for o in self._broker_unless_stopped.orders_since(since)
                if o.client_order_id.startswith(CLIENT_ID_PREFIX)]
        found = unrecorded(history, mine)
        if not found:
            return
        first = found[0].submitted_at or datetime.now(UTC)
        log.warning("the broker holds %d order(s) of DalioLite's that no restore point "
                    "records (%s): a rebalance at %s, on record from now on", len(found),
                    ", ".join(o.client_order_id for o in found), first.isoformat())
        orders = [{"client_order_id": o.client_order_id, "status": o.status,
                   "submitted_at": o.submitted_at.isoformat() if o.submitted_at else None,
                   **(o[3] or {})} for o in found]
        with self.backup_manager.changes(
                PointKind.RECONCILED, f"{len(found)} order(s) found at the broker that no "
                "point recorded", details={"orders": orders, "identity": self._identity()},
                commit_failed=self._commit_failed):
            last = self.last_rebalance()
            if last is None or last < first:
                self._save_rebalance_date(first)

    def _unrecorded_since(self) -> datetime:
        """The broker's orders count from the last rebalance the state records: its own
        orders come before it is saved (or seconds after its first, when it finished an
        earlier run's). Never further back than min_days_between: an older rebalance
        would not stop a trade today."""
        floor = datetime.now(UTC) - timedelta(days=self.config.min_days_between)
        last = self.last_rebalance()
        return floor if last is None else max(floor, last + RECONCILE_MARGIN)

    def _decide(self, force: bool, settlement: Any = None) -> RunDecision:
        if settlement is not None and not settlement.void:
            # An earlier run's rebalance, under way when it was stopped: finish it with what
            # is still needed (open orders count as filled), never by replaying its orders.
            planned, _ = self._plan_orders()
            still = settlement.unplaced_symbols
            orders = [o for o in planned if o.symbol in still]
            refused = settlement.rejected_symbols
            return RunDecision("rebalanced", "finishing the rebalance of restore point(s) "
                               + ", ".join(map(str, settlement.sequences))
                               + (f"; rejected by the broker, not ordered again: "
                                  f"{', '.join(refused)}" if refused else ""), orders)
        last = self._account_last_rebalance()
        now = datetime.now(UTC)
        if last is not None and not force:
            due = last + timedelta(days=self.config.min_days_between)
            if now < due:
                return RunDecision("no_action", f"last rebalance {last.isoformat()}; next eligible "
                                f"{due.isoformat()} (min_days_between)", [])
        orders, drift = self._plan_orders()
        if not force and drift < self.config.drift_threshold:
            return RunDecision("no_action", f"max drift {drift:.2%} is below the threshold "
                            f"{self.config.drift_threshold:.2%}", [])
        if not orders:
            return RunDecision("no_action", "every trade would be below min_trade_usd", [])
        why = "forced" if force else f"max drift {drift:.2%} >= threshold " \
            f"{self.config.drift_threshold:.2%}"
        return RunDecision("rebalanced", why, orders)

    def _plan_orders(self) -> tuple[list[MarketOrder], float]:
        """Orders that bring the account to its targets. What open orders still have to
        fill counts as done, so an order accepted and not yet filled is never placed
        again; expired and cancelled orders are no longer open and count for nothing."""
        account = self._broker_unless_stopped.get_account()
        total = float(account.portfolio_value)
        if total <= 0:
            return [], 0.0
        positions = self._broker_unless_stopped.get_all_positions()
        held = {p.symbol: float(p.market_value) for p in positions}
        pending = self._open_orders_by_symbol(positions)
        orders, drift = [], 0.0
        for symbol in sorted(set(self.config.allocation) | set(held) | set(pending)):
            weight = self.config.allocation.get(symbol, 0.0)
            current = held.get(symbol, 0.0) + pending.get(symbol, 0.0)
            log.info("drift %s: %.2f%% now, %.2f%% target", symbol, 100 * current / total,
                     100 * weight)
            drift = max(drift, abs(current / total - weight))
            delta = weight * total - current
            if abs(delta) >= self.config.min_trade_usd:
                orders.append(MarketOrder(symbol, round(abs(delta), 2),
                                          "buy" if delta > 0 else "sell"))
        orders.sort(key=lambda o: o.side != "sell")  # sell first to fund the buys
        return orders, drift

    def _open_orders_by_symbol(self, positions: list[Any]) -> dict[str, float]:
        """Dollars still to be bought (+) or sold (-) by open orders, per symbol."""
        prices = {p.symbol: float(p.market_value) / float(p.qty)
                  for p in positions if float(p.qty or 0)}
        pending: dict[str, float] = {}
        for order in self._broker_unless_stopped.get_open_orders():
            value = order.unfilled
            if value is None and order.symbol in prices:
                value = order.unfilled_qty * prices[order.symbol]
            if value is None:
                log.warning("open order %s (%s %g shares of %s) is not counted: no price "
                            "for %s", order.client_order_id, order.side, order.unfilled_qty,
                            order.symbol, order.symbol)
                continue
            log.info("open order %s (%s): %s %s, $%.2f still to fill, counted as filled",
                     order.client_order_id, order.status, order.side, order.symbol, value)
            pending[order.symbol] = pending.get(order.symbol, 0.0) + \
                (value if order.side == "buy" else -value)
        return pending

    def _trade(self, orders: list[MarketOrder], settlement: Any = None) -> None:
        """Claim an intent naming every order, place them, record the rebalance (at the
        first accepted order's time when it finishes an earlier run's)."""
        orders = self._with_client_order_ids(orders)
        if orders:
            self.stop.check("its orders: none was placed and no intent was claimed; the "
                            "next run decides afresh")
            self._claim_intent(orders, settlement)
        placed: list[str] = []
        try:
            for order in orders:
                self._check_lease()
                broker = self._broker_unless_stopped
                log.info("order: %s %s $%.2f (client order id %s)", order.side, order.symbol,
                         order.notional, order.client_order_id)
                broker.submit_order(order)
                placed.append(order.client_order_id)
        except BrokerError as exc:
            if isinstance(exc, OrderRejected):
                # In the point this failed run commits, so the next one settles it as
                # rejected, not unplaced, and finishes the rest without it.
                self._run_details["rejected"] = sorted(
                    {*self._run_details.get("rejected", ()), exc.client_order_id})
            if placed:
                raise BrokerError(f"{exc} ({len(placed)} of {len(orders)} orders were placed "
                                  f"before: {', '.join(placed)}; the next run counts them)") \
                    from None
            raise
        except Stopped as exc:
            raise Stopped(exc.signum, f"stopped by {self.stop.name} after {len(placed)} of "
                          f"{len(orders)} orders{_listed(placed)}: the intent (restore point "
                          f"{self._intents[-1]}) stays open; the next run settles it with the "
                          "broker and orders the rest, once") from None
        when = settlement.when if settlement is not None and settlement.when else None
        self._save_rebalance_date(when or datetime.now(UTC))
        # The run's point settles its intent (and the earlier run's it finished) only
        # once every order is placed: a run stopped before leaves them for the next.
        self._run_details["settles"] = (settlement.sequences if settlement else []) + \
            self._intents
        self._run_details["placed"] = sorted(self._run_details.get("placed", []) + placed)

    def _check_lease(self) -> None:
        """Past its lease, another machine may take the intent as abandoned and settle it
        (this one was stopped a long while: a VM paused, a laptop lid): no order of it is
        placed any more; the next run here settles what was placed."""
        if self._claimed_at is not None and datetime.now(UTC) > self._claimed_at + \
                INTENT_LEASE:
            raise BrokerError(f"the intent claimed at {self._claimed_at.isoformat()} is "
                              f"older than its lease ({INTENT_LEASE}): no more of its orders "
                              "are placed; the next run settles them with the broker")
        # A clock that stood still while this machine was paused says nothing of the
        # lease: the history does. Another writer's point after the intent means it was
        # taken as abandoned and settled elsewhere.
        moved = self._intents and self.backup_manager.moved_past(self._intents[-1])
        if moved:
            raise BrokerError(f"after this run's intent ({self._intents[-1]}), {moved}: no "
                              "more of its orders are placed here; the next run settles them "
                              "with the broker")

    def _claim_intent(self, orders: list[MarketOrder], settlement: Any) -> None:
        """The intent before the orders: a restore point naming each one, claimed in every
        store. A claim another writer holds first stops the run before any order."""
        intent = [{"client_order_id": o.client_order_id, "symbol": o.symbol,
                   "side": o.side, "notional": round(o.notional, 2)} for o in orders]
        details = {"identity": self._identity()}
        if settlement is not None:
            details["continues"] = settlement.sequences
        point, unfenced = claim_intent(self.backup_manager, intent, self._facts(),
                                       details=details)
        self._intents.append(point.sequence)
        self._claimed_at = point.time
        log.info("intent committed as restore point %d before %d order(s)%s", point.sequence,
                 len(orders), "" if not unfenced else "; not claimed in " +
                 ", ".join(unfenced) + " (cannot be asked)")

    def _with_client_order_ids(self, orders: list[MarketOrder]) -> list[MarketOrder]:
        """Each order with a client order id of its own: DalioLite's prefix, this
        machine's writer id, this run, a nonce; at most 48 characters, never reused."""
        writer = self._writer()
        run = self.run_started.strftime("%Y%m%dT%H%M%SZ")
        nonces: list[str] = []
        while len(nonces) < len(orders):
            nonce = os.urandom(3).hex()
            if nonce not in nonces:
                nonces.append(nonce)
        return [replace(order, client_order_id=f"{CLIENT_ID_PREFIX}{writer}-{run}-{nonce}")
                for order, nonce in zip(orders, nonces, strict=True)]

    def _writer(self) -> str:
        try:
            return writer_id(self.backup_manager.backup_dir,
                             durable=self.config.backup["durable"])
        except (BackupError, OSError) as exc:
            # Orders never wait for backups/ (a failed backup never fails a run): a
            # one-off id still marks them as DalioLite's and this run's.
            log.warning("no writer id (%s): this run's orders carry a one-off one", exc)
            return os.urandom(6).hex()

    def _record(self, decision: RunDecision) -> None:
        last = None
        try:
            last = self.last_rebalance()
        except (InvalidStateError, KeyError, OSError):
            pass
        previous = self._previous_status()
        broker = self.broker_record or previous.get("broker")
        on_record = last.isoformat() if last else (
            None if self.fresh_start else previous.get("rebalance_on_record"))
        counted = _on_account(last, broker)
        nxt = counted + timedelta(days=self.config.min_days_between) if counted else (
            None if self.fresh_start or last else previous.get("next_eligible_rebalance"))
        if self.last_backup is None:
            self.last_backup = previous.get("last_backup")
        if self.last_backup_error is None and not self.caught_up:
            # Cleared only by a catch-up that backed up every state file.
            self.last_backup_error = previous.get("last_backup_error")
        doc = {
            "last_run": datetime.now(UTC).isoformat(),
            "outcome": decision.outcome,
            "reason": decision.reason,
            "next_eligible_rebalance": nxt.isoformat() if isinstance(nxt, datetime) else nxt,
            "rebalance_on_record": on_record,
            "last_backup": self.last_backup,
            "last_backup_error": self.last_backup_error,
            # An accepted fresh start: positions are then no evidence of a lost rebalance.
            "fresh_start": None if last else self.fresh_start or previous.get("fresh_start"),
            # The broker account this history belongs to (see _check_broker).
            "broker": broker,
            # What the backup module's status reads of its host (the Site's host record).
            "state_files": [str(p) for p in self.backup_manager.state_files],
            "run_command": self.site.host_command(),
        }
        self.save_state(AUTOPILOT_STATUS, doc)
        if doc["last_backup_error"] != self.last_backup_error:
            # The status file's own backup failed: record that too, without a second try.
            doc["last_backup_error"] = self.last_backup_error
            path = self.state_path(AUTOPILOT_STATUS)
            atomic_write(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(),
                         durable=self.config.backup["durable"])

    def _previous_status(self) -> dict[str, Any]:
        try:
            return self.read_state(AUTOPILOT_STATUS) or {}
        except (InvalidStateError, OSError):
            return {}

    def status(self) -> dict[str, Any]:
        """The last run and backup health; `problems` lists what needs a person."""
        try:
            autopilot = self.read_state(AUTOPILOT_STATUS)
        except (InvalidStateError, OSError) as exc:
            autopilot = {"error": str(exc)}
        backups = self.site.status()
        problems = backups.pop("problems")
        return {"ok": backups.pop("ok"), "autopilot": autopilot, "backups": backups,
                "problems": problems}


def _outcome(exc: BaseException) -> str:
    """How a run that raised ends, as autopilot_status.json and its point say."""
    return "stopped" if isinstance(exc, Stopped) else "error"


def _listed(client_order_ids: list[str]) -> str:
    return f" ({', '.join(client_order_ids)})" if client_order_ids else ""


def _broker_label(record: dict[str, Any]) -> str:
    if record.get("kind") == "paper":
        return "the paper broker"
    return f"{record.get('kind')} account {record.get('account')}"


def _identity_label(identity: Any) -> str:
    """A restore point's identity, as people say it: the paper broker, alpaca account X."""
    if not isinstance(identity, dict):
        return str(identity)
    return _broker_label({"kind": identity.get("broker"), "account": identity.get("account")})


def _on_account(last: datetime | None, broker: Any) -> datetime | None:
    """`last` if it was made on the broker account the history belongs to now: not
    before the deliberate switch to it (`since`)."""
    since = broker.get("since") if isinstance(broker, dict) else None
    try:
        if last is not None and since and last < parse_iso_timestamp(since):
            return None
    except InvalidStateError:
        pass  # an unreadable switch time: the date counts, the careful way
    return last


# --- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dalio_lite.py", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml",
                        help="config file (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="decide, but place no orders")
    parser.add_argument("--force-rebalance", action="store_true",
                        help="rebalance now, ignoring min_days_between and the drift threshold")
    parser.add_argument("--accept-fresh-state", action="store_true",
                        help="start unrecoverable state files over on purpose; their damaged "
                             "backups are moved to backups/corrupt/")
    parser.add_argument("--accept-rollback", action="store_true",
                        help="keep live state that is older than the newest restore point (a "
                             "restore of older state, on purpose): this run records it as a "
                             "restore point of kind rollback and goes on")
    parser.add_argument("--take-over", action="store_true",
                        help="this machine's state becomes the newest restore point of the "
                             "history, on purpose, after another machine wrote to it (or a "
                             "cloned disk forked it); the other machine then refuses")
    parser.add_argument("--switch-broker", action="store_true",
                        help="make the configured broker account the one this history "
                             "belongs to, on purpose (the old history is kept; the new "
                             "account starts with no last rebalance), then exit")
    parser.add_argument("--status", action="store_true", help="print the last run and backup "
                                                              "health as JSON, then exit")
    parser.add_argument("--every", type=Every.parse, metavar="INTERVAL",
                        help="run the daily check now and then every INTERVAL (90s, 30m, 24h, "
                             "1d) in this process, until SIGTERM or Ctrl-C (a Procfile's "
                             "worker)")
    parser.add_argument("--schedule", choices=PLATFORMS,
                        help="print the jobs that run this checkout on that scheduler (the "
                             "daily check, an hourly health check, a weekly check) and where "
                             "each goes; installs nothing; then exit")
    parser.add_argument("--system", action="store_true",
                        help="with --schedule systemd: system units (default: user units)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.every is not None:
        once = ['--' + '-'.join(name.split('_')) for name in ONE_RUN_FLAGS if getattr(args, name)]
        if once:
            parser.error(f"--every repeats the plain daily check; {' and '.join(once)} "
                         f"{'is' if len(once) == 1 else 'are'} for one run: run it by itself, "
                         "without --every")
    if args.system and args.schedule != "systemd":
        parser.error("--system goes with --schedule systemd")
    if args.schedule:
        return print_schedule(args.schedule, args.config, system=args.system)
    if args.switch_broker and (args.dry_run or args.force_rebalance or args.status):
        parser.error("--switch-broker only switches: run it without --dry-run, "
                     "--force-rebalance or --status")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.dry_run:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_said_as_a_dry_run)
    if args.every is not None:
        return run_every(args)
    stop = StopRequest()
    if args.status or args.switch_broker:
        return run_once(args, stop)[0]
    with stop.installed():
        code, bot = run_once(args, stop)
        if stop.signum is not None:
            _stopping(stop, bot.backup_manager if bot else None, args.config)
        return code


# Flags that acknowledge or force something for one run, or are no daily check at all:
# never repeated by --every.
ONE_RUN_FLAGS = ("force_rebalance", "accept_fresh_state", "accept_rollback", "take_over",
                 "switch_broker", "status", "schedule")


def run_once(args: argparse.Namespace, stop: StopRequest) -> tuple[int, DalioLite | None]:
    """One run as the command line asked for it: its exit code, and the bot that ran it."""
    bot = None
    try:
        load_env_file(Path(args.config).resolve().parent / ENV_FILE)
        bot = DalioLite(args.config, accept_fresh_state=args.accept_fresh_state,
                        accept_rollback=args.accept_rollback, take_over=args.take_over,
                        stop=stop)
        _check_state_dir(bot.state_dir)
        if args.status:
            doc = bot.status()
            try:
                json.dump(doc, sys.stdout, indent=2, default=str)
                sys.stdout.write("\n")
                sys.stdout.flush()
            except BrokenPipeError:
                return _output_closed(), bot
            return (EXIT_OK if doc["ok"] else EXIT_ERROR), bot
        if bot.config.broker["kind"] == "alpaca":
            _check_alpaca(bot)
        if args.switch_broker:
            log.info("%s", bot.switch_broker())
            return EXIT_OK, bot
        decision = bot.run_daily_check(dry_run=args.dry_run, force=args.force_rebalance)
    except StateUnrecoverableError as exc:
        log.critical("%s", exc)
        return EXIT_REFUSED, bot
    except BrokerError as exc:
        log.error("%s; nothing is recorded as a rebalance", exc)
        return EXIT_BROKER, bot
    except (BackupError, ValueError, OSError, LockTimeout) as exc:
        log.error("%s", exc)
        return EXIT_ERROR, bot
    except Stopped as exc:
        log.warning("%s", exc)
        return exc.exit_code, bot
    log.info("done: %s", decision.outcome)
    return EXIT_OK, bot


@dataclass(frozen=True)
class Every:
    """--every's value: a whole number and a unit, as people write it (24h, 1d)."""

    text: str
    seconds: int

    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    LONGEST = 366 * 86400

    @classmethod
    def parse(cls, text: str) -> Every:
        found = re.fullmatch(r"([0-9]+)([smhd])", text.strip())
        seconds = int(found[1]) * cls.UNITS[found[2]] if found else 0
        if not 0 < seconds <= cls.LONGEST:
            raise argparse.ArgumentTypeError(
                f"takes a whole number and a unit, s, m, h or d (90s, 30m, 24h, 1d), more "
                f"than 0 and at most 366d; got {text!r}")
        return cls(text.strip(), seconds)


def run_every(args: argparse.Namespace) -> int:
    """The daily check now and every `args.every`, in this process (a Procfile's worker),
    counted from the start of each run. Each run is one as cron starts it: config, state
    files and broker account read afresh under the run lock. A run that fails is logged
    and the next one comes all the same. A stop (SIGTERM, Ctrl-C) while waiting sends the
    copies still owed and exits 0; one during a run ends the loop with that run, which
    starts no broker call or order after it, and exits with its code."""
    try:
        config = load_config(args.config)
    except (BackupError, OSError) as exc:
        log.error("%s; nothing was run", exc)
        return EXIT_ERROR
    if not config.backup["cloud_enabled"]:
        log.warning("cloud backup is off (backup.cloud_enabled): state and its backups are "
                    "on this disk only; where a redeploy wipes the disk, they go with it "
                    "(docs/platforms.md)")
    with StopRequest().installed() as stop:
        log.info("running the daily check now and every %s; SIGTERM or Ctrl-C stops it",
                 args.every.text)
        while True:
            started = time.monotonic()
            try:
                code, bot = run_once(args, stop)
            except Exception:  # a bug in one run must not end the loop: the next may pass
                log.exception("the daily check failed unexpectedly")
                code, bot = EXIT_ERROR, None
            if stop.signum is not None:
                _stopping(stop, bot.backup_manager if bot else None, args.config)
                return code
            wait = args.every.seconds - (time.monotonic() - started)
            log.log(logging.INFO if code == EXIT_OK else logging.WARNING,
                    "%snext daily check at %s UTC (every %s)",
                    "" if code == EXIT_OK else f"this daily check ended with exit {code}; ",
                    f"{datetime.now(UTC) + timedelta(seconds=max(wait, 0)):%Y-%m-%d %H:%M:%S}",
                    args.every.text)
            if stop.sleep(wait):
                _stopping(stop, None, args.config, " while waiting")
                return EXIT_OK


def _stopping(stop: StopRequest, manager: BackupManager | None, config_path: str,
              when: str = "") -> None:
    """Before a stopped process ends: the copies still owed, once more. Bounded by the S3
    client's timeouts; a target that failed for `manager` (the run's) is not asked again."""
    log.info("%s%s: sending the copies still owed, then stopping", stop.name, when)
    try:
        manager = manager or Site(config_path).manager
    except (BackupError, OSError) as exc:
        log.error("cannot send the copies still owed: %s", exc)
        return
    result = manager.send_owed()
    if result.copied or result.pending or result.errors:
        log.log(logging.INFO if not (result.pending or result.errors) else logging.ERROR,
                "copies still owed: %d sent, %d not (they stay owed: the next run, or "
                "python -m backup_manager sync, sends them)", result.copied, result.pending)


def _said_as_a_dry_run(record: logging.LogRecord) -> bool:
    """Every line a dry run logs says it is one: nothing it names was done."""
    message = record.getMessage()
    if not message.startswith("dry run"):
        record.msg, record.args = f"dry run: {message}", None
    return True


def _output_closed() -> int:
    """The reader of stdout went away (`--status | head -1`): end quietly, as git and
    ls do; stdout now goes nowhere, so the flush at exit cannot complain either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what the shell reports for `git log | head -1`


def _check_state_dir(state_dir: Path) -> None:
    """state.dir must be a folder, or be creatable as one."""
    folder = state_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.is_dir():
        return
    problem = f"state.dir {state_dir} is a file, not a folder" if folder == state_dir else \
        f"state.dir {state_dir} cannot be created: {folder} is a file, not a folder"
    raise ConfigError(f"{problem}. DalioLite keeps its state files in that folder: look at "
                      f"what the file holds, move it aside (mv {folder} {folder}.moved) and "
                      f"run again, or set state.dir in config.yaml to another folder")


def _check_alpaca(bot: DalioLite) -> None:
    """broker.kind alpaca: alpaca-py and the keys must be there before any decision, not
    only on the day a rebalance is due."""
    import importlib.util

    if importlib.util.find_spec("alpaca") is None:
        raise ConfigError(
            f"broker.kind is alpaca but alpaca-py is not installed for {sys.executable}: "
            f"install it with: {sys.executable} -m pip install 'alpaca-py>=0.30' (or, in the "
            f"project folder: .venv/bin/pip install -e '.[alpaca]'); nothing was decided")
    bot.broker  # noqa: B018 - builds the client now: missing keys fail here, not on a trade day


if __name__ == "__main__":
    sys.exit(main())
