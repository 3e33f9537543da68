"""A fake Alpaca trading API on 127.0.0.1, for the tests: the REST calls alpaca-py's
TradingClient makes for DalioLite, answered with bodies its pydantic models accept.

    server = FakeAlpaca()            # listening on 127.0.0.1, a free port
    server.url                       # broker.base_url for config.yaml
    server.fill()                    # fill every open order (or one, or a part of it)
    server.fail("POST /v2/orders", 504, accept=True)   # take the order, answer 504
    server.slow("GET /v2/positions", 2.0, on_arrival=f)  # call f, serve, answer 2 s later
    server.kill_after_order(pid, 2)  # SIGKILL pid right after accepting its 2nd order
    server.stop()

Orders stay open until the test fills or expires them, as Alpaca holds a market order
outside market hours. A `client_order_id` used before is refused (422), as Alpaca
refuses it. Faults are served in the order they were asked for, each `times` times:
an HTTP status (500, 504, ...), "hang" (accept the request, never answer) or "drop"
(close the connection without an answer). Connection refused: `stop()` the server, or
point the client at tests.helpers.refused_port().
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

API_KEY, SECRET_KEY = "fake-key-id", "fake-secret-key"
KEYS_ENV = {"ALPACA_API_KEY": API_KEY, "ALPACA_SECRET_KEY": SECRET_KEY}
PRICES = {"VTI": 250.0, "TLT": 90.0, "GLD": 190.0, "DBC": 22.0}
OPEN_STATUSES = {"new", "accepted", "pending_new", "partially_filled", "accepted_for_bidding",
                 "held", "pending_cancel", "pending_replace"}
MAX_CLIENT_ORDER_ID = 48  # Alpaca's limit


def stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Slowness:
    route: str
    seconds: float      # how long the answer is held once the request is served
    times: int
    on_arrival: Callable[[str], None] | None  # called with the route as a request arrives


@dataclass
class Fault:
    route: str          # "POST /v2/orders", "GET /v2/account", ...
    answer: int | str   # an HTTP status, "hang" or "drop"
    times: int
    accept: bool        # POST /v2/orders: take the order before failing
    after: int          # requests to let through first


class FakeAlpaca:
    """One paper account: cash, positions, orders, at fixed prices."""

    def __init__(self, cash: float = 100_000.0, prices: dict[str, float] | None = None,
                 hang_seconds: float = 60.0):
        self.prices = dict(prices or PRICES)
        self.account_id = str(uuid.uuid4())
        self.cash = cash
        self.shares: dict[str, float] = {}
        self.orders: list[dict] = []
        self.requests: list[str] = []   # "METHOD /path" of every request, in order
        self.faults: list[Fault] = []
        self.slowness: list[Slowness] = []
        self.killed: list[int] = []
        self._kill: tuple[int, int, bool] | None = None
        self.on_accept = None  # called with each order accepted, once it is placed
        self._orders_by_pid: dict[int, int] = {}
        self._hang_seconds = hang_seconds
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop answering; connecting is refused from now on."""
        if self._stopping.is_set():
            return
        self._stopping.set()  # a hanging request ends, unanswered
        self._server.shutdown()
        self._server.server_close()

    # --- what a test asks for ----------------------------------------------------------

    def fail(self, route: str, answer: int | str, *, times: int = 1, accept: bool = False,
             after: int = 0) -> None:
        """`times` requests to `route`, after the next `after`, fail with `answer`."""
        with self._lock:
            self.faults.append(Fault(route, answer, times, accept, after))

    def slow(self, route: str, seconds: float, *, times: int = 1,
             on_arrival: Callable[[str], None] | None = None) -> None:
        """The next `times` requests to `route` are served as usual (an order is placed),
        but their answers are held `seconds`: a broker answering slowly. `on_arrival` is
        called as each arrives, before anything is served (the caller is in flight)."""
        with self._lock:
            self.slowness.append(Slowness(route, seconds, times, on_arrival))

    def kill_after_order(self, pid: int, nth: int) -> None:
        """SIGKILL process `pid` right after accepting its `nth` order (counted from now),
        before the answer is sent: the order is placed, the process never hears of it."""
        with self._lock:
            self._kill = (pid, nth, True)
            self._orders_by_pid[pid] = 0

    def kill_before_order(self, pid: int, nth: int) -> None:
        """SIGKILL process `pid` when its `nth` order arrives, before it is accepted: the
        process died with that order on its way (or between its orders); none is placed."""
        with self._lock:
            self._kill = (pid, nth, False)
            self._orders_by_pid[pid] = 0

    def fill(self, client_order_id: str | None = None, portion: float = 1.0) -> None:
        """Fill `portion` of what is still open of one order (by client order id), or of
        every open order, at the fixed prices."""
        with self._lock:
            for order in self._open_orders(client_order_id):
                self._fill(order, portion)

    def expire(self, client_order_id: str | None = None) -> None:
        """Expire one open order, or every one (a day order at the close)."""
        with self._lock:
            for order in self._open_orders(client_order_id):
                order.update(status="expired", expired_at=stamp(), updated_at=stamp())

    def open_orders(self) -> list[dict]:
        with self._lock:
            return [dict(o) for o in self.orders if o["status"] in OPEN_STATUSES]

    def submitted(self) -> list[dict]:
        """Every order the server accepted, oldest first."""
        with self._lock:
            return [dict(o) for o in self.orders]

    def value(self) -> float:
        with self._lock:
            return self.cash + sum(q * self.prices[s] for s, q in self.shares.items())

    def _open_orders(self, client_order_id: str | None) -> list[dict]:
        return [o for o in self.orders if o["status"] in OPEN_STATUSES and
                client_order_id in (None, o["client_order_id"])]

    def _fill(self, order: dict, portion: float) -> None:
        price = self.prices[order["symbol"]]
        done = float(order["filled_qty"]) * price
        amount = (float(order["notional"]) - done) * portion
        qty = amount / price
        if order["side"] == "buy":
            self.cash -= amount
            self.shares[order["symbol"]] = self.shares.get(order["symbol"], 0.0) + qty
        else:
            self.cash += amount
            self.shares[order["symbol"]] = self.shares.get(order["symbol"], 0.0) - qty
        filled = float(order["filled_qty"]) + qty
        whole = abs(float(order["notional"]) - filled * price) < 0.005
        order.update(filled_qty=f"{filled:.9f}", filled_avg_price=f"{price:.2f}",
                     status="filled" if whole else "partially_filled", updated_at=stamp(),
                     filled_at=stamp() if whole else None)

    # --- the API -------------------------------------------------------------------------

    def _slowness_for(self, route: str) -> Slowness | None:
        with self._lock:
            for slowness in self.slowness:
                if slowness.route == route:
                    slowness.times -= 1
                    if slowness.times <= 0:
                        self.slowness.remove(slowness)
                    return slowness
        return None

    def _fault_for(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.route == route and fault.after:
                    fault.after -= 1
                    return None
                if fault.route == route:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def account(self) -> dict:
        with self._lock:
            held = sum(q * self.prices[s] for s, q in self.shares.items())
            reserved = sum(float(o["notional"]) - float(o["filled_qty"]) * self.prices[
                o["symbol"]] for o in self.orders
                if o["status"] in OPEN_STATUSES and o["side"] == "buy")
            value = f"{self.cash + held:.2f}"
            return {"id": self.account_id, "account_number": "PA1FAKE00001", "status": "ACTIVE",
                    "crypto_status": "ACTIVE", "currency": "USD", "cash": f"{self.cash:.2f}",
                    "buying_power": f"{self.cash - reserved:.2f}",
                    "regt_buying_power": f"{self.cash - reserved:.2f}",
                    "non_marginable_buying_power": f"{self.cash - reserved:.2f}",
                    "portfolio_value": value, "equity": value, "last_equity": value,
                    "long_market_value": f"{held:.2f}", "short_market_value": "0",
                    "multiplier": "1", "shorting_enabled": False, "trading_blocked": False,
                    "transfers_blocked": False, "account_blocked": False,
                    "trade_suspended_by_user": False, "created_at": stamp(),
                    "initial_margin": "0", "maintenance_margin": "0", "sma": "0"}

    def positions(self) -> list[dict]:
        with self._lock:
            return [_position(s, q, self.prices[s]) for s, q in sorted(self.shares.items())
                    if q > 1e-9]

    def list_orders(self, query: dict[str, str]) -> list[dict]:
        status = query.get("status", "open")
        limit = min(int(query.get("limit", 50)), 500)
        after = parse_stamp(query["after"]) if "after" in query else None
        until = parse_stamp(query["until"]) if "until" in query else None
        with self._lock:
            found = [dict(o) for o in self.orders
                     if (status == "all" or (o["status"] in OPEN_STATUSES) == (status == "open"))
                     and (after is None or parse_stamp(o["submitted_at"]) > after)
                     and (until is None or parse_stamp(o["submitted_at"]) <= until)]
        if query.get("direction", "desc") == "desc":
            found.reverse()
        return found[:limit]

    def by_client_order_id(self, client_order_id: str) -> dict | None:
        with self._lock:
            return next((dict(o) for o in self.orders
                         if o["client_order_id"] == client_order_id), None)

    def place(self, body: dict) -> tuple[int, dict]:
        """POST /v2/orders: (status, answer)."""
        problem = _order_problem(body, self.prices)
        if problem:
            return 422, {"code": 40010000, "message": problem}
        client_order_id = body.get("client_order_id") or str(uuid.uuid4())
        with self._lock:
            if any(o["client_order_id"] == client_order_id for o in self.orders):
                return 422, {"code": 40010001, "message": "client_order_id must be unique"}
            notional = round(float(body["notional"]), 2)
            shares = notional / self.prices[body["symbol"]]
            if body["side"] == "sell" and shares > self.shares.get(body["symbol"], 0) + 1e-6:
                return 403, {"code": 40310000, "message": "insufficient qty available for order"}
            now = stamp()
            order = {
                "id": str(uuid.uuid4()), "client_order_id": client_order_id,
                "created_at": now, "updated_at": now, "submitted_at": now,
                "filled_at": None, "expired_at": None, "expires_at": None, "canceled_at": None,
                "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
                "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, body["symbol"])),
                "symbol": body["symbol"], "asset_class": "us_equity",
                "notional": f"{notional:.2f}", "qty": None, "filled_qty": "0",
                "filled_avg_price": None, "order_class": "", "order_type": "market",
                "type": "market", "side": body["side"], "time_in_force": body["time_in_force"],
                "limit_price": None, "stop_price": None, "status": "accepted",
                "extended_hours": False, "legs": None, "trail_percent": None,
                "trail_price": None, "hwm": None, "position_intent": None,
            }
            self.orders.append(order)
        if self.on_accept is not None:
            self.on_accept(dict(order))
        return 200, dict(order)

    def _kill_if_due(self, peer_port: int, accepted: bool) -> bool:
        """True when the process that sent this order was killed for it (`accepted`:
        asked once the order is placed, else before)."""
        with self._lock:
            if self._kill is None or self._kill[2] != accepted:
                return False
            pid, nth, _ = self._kill
            if not _process_owns_connection(pid, peer_port, self.port):
                return False
            self._orders_by_pid[pid] += 1
            if self._orders_by_pid[pid] != nth:
                return False
            self._kill = None
        os.kill(pid, signal.SIGKILL)
        self.killed.append(pid)
        return True


def _position(symbol: str, qty: float, price: float) -> dict:
    value = f"{qty * price:.2f}"
    return {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol)), "symbol": symbol,
            "exchange": "ARCA", "asset_class": "us_equity", "asset_marginable": True,
            "avg_entry_price": f"{price:.2f}", "qty": f"{qty:.9f}", "side": "long",
            "market_value": value, "cost_basis": value, "unrealized_pl": "0",
            "unrealized_plpc": "0", "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0", "current_price": f"{price:.2f}",
            "lastday_price": f"{price:.2f}", "change_today": "0",
            "qty_available": f"{qty:.9f}"}


def _order_problem(body: dict, prices: dict[str, float]) -> str | None:
    for key in ("symbol", "side", "type", "time_in_force", "notional"):
        if key not in body:
            return f"{key} is required"
    if body["symbol"] not in prices:
        return f"asset \"{body['symbol']}\" not found"
    if body["side"] not in ("buy", "sell") or body["type"] != "market":
        return "only notional market buy and sell orders are served here"
    if len(body.get("client_order_id") or "") > MAX_CLIENT_ORDER_ID:
        return f"client_order_id must be no more than {MAX_CLIENT_ORDER_ID} characters"
    if float(body["notional"]) < 1:
        return "order notional must be >= 1.00"
    return None


def _process_owns_connection(pid: int, peer_port: int, server_port: int) -> bool:
    """Whether process `pid` holds the client end of the TCP connection from
    127.0.0.1:peer_port to our port (Linux: /proc/net/tcp, then the process's fds)."""
    local, remote = f"0100007F:{peer_port:04X}", f"0100007F:{server_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            inode = fields[9]
    if inode is None:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:
            continue
    return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' Session expects

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method: str) -> None:
        fake: FakeAlpaca = self.server.fake
        parts = urlsplit(self.path)
        route = f"{method} {parts.path}"
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = self._body()
        with fake._lock:
            fake.requests.append(route)
        if self.headers.get("APCA-API-KEY-ID") != API_KEY or \
                self.headers.get("APCA-API-SECRET-KEY") != SECRET_KEY:
            return self._answer(401, {"code": 40110000, "message": "request is not authorized"})
        slowness = fake._slowness_for(route)
        self._hold = slowness.seconds if slowness else 0.0
        if slowness is not None and slowness.on_arrival is not None:
            slowness.on_arrival(route)
        fault = fake._fault_for(route)
        if fault is not None and fault.accept and route == "POST /v2/orders":
            fake.place(body)
        if fault is not None:
            return self._fail(fault.answer)
        if route == "GET /v2/account":
            return self._answer(200, fake.account())
        if route == "GET /v2/positions":
            return self._answer(200, fake.positions())
        if route == "GET /v2/orders":
            return self._answer(200, fake.list_orders(query))
        if route == "GET /v2/orders:by_client_order_id":
            found = fake.by_client_order_id(query.get("client_order_id", ""))
            if found is None:
                return self._answer(404, {"code": 40410000, "message": "order not found"})
            return self._answer(200, found)
        if route == "POST /v2/orders":
            if fake._kill_if_due(self.client_address[1], accepted=False):
                self.close_connection = True
                return None
            status, answer = fake.place(body)
            if status == 200 and fake._kill_if_due(self.client_address[1], accepted=True):
                self.close_connection = True
                return None
            return self._answer(status, answer)
        return self._answer(404, {"code": 40410000, "message": f"no route {route}"})

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        return json.loads(self.rfile.read(length))

    def _fail(self, answer: int | str) -> None:
        fake: FakeAlpaca = self.server.fake
        if answer == "hang":
            fake._stopping.wait(fake._hang_seconds)
        if answer in ("hang", "drop"):
            self.close_connection = True
            return
        self._answer(int(answer), {"code": int(answer) * 100000,
                                   "message": f"fake server: {answer} on purpose"})

    def _answer(self, status: int, doc) -> None:
        if getattr(self, "_hold", 0.0):
            self.server.fake._stopping.wait(self._hold)
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
