"""DalioLite: an automated All Weather portfolio manager, run once a day.

Every state write goes through backup_manager.atomic_write and is backed up at
once; at start-up, missing or corrupt state is restored from backups before any
decision is taken. Where state cannot be restored but evidence says it existed,
DalioLite refuses to trade (exit 3) and says which command to run.

    python dalio_lite.py [--config PATH] [--dry-run] [--force-rebalance]
                         [--accept-fresh-state] [--status]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

from backup_manager import (
    BackupError,
    BackupManager,
    ConfigError,
    HostFacts,
    InvalidStateError,
    LockTimeout,
    PointKind,
    StateUnrecoverableError,
    atomic_write,
    file_lock,
    parse_iso_timestamp,
    read_state_file,
    recover,
    register_validator,
    status_problems,
    validate_content,
)
from backup_manager.config import (
    backup_options,
    check_keys,
    flag,
    load_config_file,
    number,
    whole_number,
)

log = logging.getLogger("dalio_lite")

LAST_REBALANCE = "last_rebalance.json"
PAPER_ACCOUNT = "paper_account.json"
AUTOPILOT_STATUS = "autopilot_status.json"
RUN_LOCK = "dalio_lite.lock"
EXIT_OK, EXIT_ERROR, EXIT_REFUSED = 0, 1, 3

DEFAULT_CONFIG: dict[str, Any] = {
    "allocation": {"VTI": 0.40, "TLT": 0.30, "GLD": 0.20, "DBC": 0.10},
    "rebalancing": {"drift_threshold": 0.05, "min_days_between": 30, "min_trade_usd": 50.0},
    "broker": {"kind": "paper", "starting_cash": 100000.0,
               "prices": {"VTI": 250.0, "TLT": 90.0, "GLD": 190.0, "DBC": 22.0},
               "paper": True},
    "state": {"dir": "state"},
    "concurrency": {"lock_timeout_seconds": 30},
    "backup": None,
}


STATE_FILES = (LAST_REBALANCE, PAPER_ACCOUNT, AUTOPILOT_STATUS)


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
    backup["state_files"] = _state_files(backup["state_files"], base / state_dir)
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


def _state_files(configured: list[Path], state_dir: Path) -> list[Path]:
    """DalioLite's three state files unless configured; none outside state.dir, where
    DalioLite reads and writes them (a backup of a file it never reads protects nothing)."""
    if not configured:
        return [state_dir / name for name in STATE_FILES]
    for path in configured:
        if path.resolve().parent != state_dir.resolve():
            raise ConfigError(f"backup.state_files names {path}, which is not in state.dir "
                              f"({state_dir}): DalioLite keeps its state there")
    left_out = sorted(set(STATE_FILES) - {p.name for p in configured})
    if left_out:
        raise ConfigError(f"backup.state_files leaves out {', '.join(left_out)}: DalioLite "
                          "writes and must recover all three state files; leave the key out "
                          "for the default")
    return configured


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
    return brk


# --- brokers ----------------------------------------------------------------------


@dataclass(frozen=True)
class MarketOrder:
    """A notional market order, as alpaca-py's MarketOrderRequest carries it."""

    symbol: str
    notional: float
    side: str  # "buy" or "sell"


class Broker(Protocol):
    """The part of alpaca-py's TradingClient that DalioLite uses."""

    def get_account(self) -> Any: ...  # .cash, .portfolio_value, .equity
    def get_all_positions(self) -> list[Any]: ...  # .symbol, .market_value
    def submit_order(self, order_data: MarketOrder) -> Any: ...


class PaperBroker:
    """An offline, deterministic broker: prices from config, account in a state file.

    `persist` is called with the account document after every fill, so the
    account is written atomically and backed up like any other state.
    """

    def __init__(self, prices: dict[str, float], account: dict[str, Any], persist: Any):
        self.prices = {k: float(v) for k, v in prices.items()}
        self.cash = float(account["cash"])
        self.shares = {k: float(v) for k, v in account.get("positions", {}).items()}
        self.persist = persist

    @staticmethod
    def new_account(starting_cash: float) -> dict[str, Any]:
        return {"cash": float(starting_cash), "positions": {}}

    def document(self) -> dict[str, Any]:
        return {"cash": round(self.cash, 2),
                "positions": {k: round(v, 6) for k, v in sorted(self.shares.items()) if v}}

    def get_account(self) -> Any:
        value = self.cash + sum(p.market_value_f for p in self._positions())
        return SimpleNamespace(cash=f"{self.cash:.2f}", portfolio_value=f"{value:.2f}",
                               equity=f"{value:.2f}")

    def get_all_positions(self) -> list[Any]:
        return [SimpleNamespace(symbol=p.symbol, market_value=f"{p.market_value_f:.2f}",
                                qty=f"{p.qty:.6f}") for p in self._positions()]

    def _positions(self) -> list[Any]:
        return [SimpleNamespace(symbol=s, qty=q, market_value_f=q * self._price(s))
                for s, q in sorted(self.shares.items()) if q]

    def _price(self, symbol: str) -> float:
        if symbol not in self.prices:
            raise ValueError(f"paper broker has no price for {symbol}; add broker.prices")
        return self.prices[symbol]

    def submit_order(self, order_data: MarketOrder) -> Any:
        price = self._price(order_data.symbol)
        notional = round(order_data.notional, 2)
        if order_data.side == "buy":
            notional = min(notional, round(self.cash, 2))
            self.cash -= notional
            self.shares[order_data.symbol] = self.shares.get(order_data.symbol, 0.0) + \
                notional / price
        else:
            held = self.shares.get(order_data.symbol, 0.0)
            qty = min(notional / price, held)
            self.shares[order_data.symbol] = held - qty
            self.cash += qty * price
        self.persist(self.document())
        return SimpleNamespace(symbol=order_data.symbol, side=order_data.side,
                               notional=f"{notional:.2f}", status="filled")


class AlpacaBroker:
    """Adapter to alpaca-py's TradingClient (paper trading unless told otherwise)."""

    def __init__(self, client: Any = None, *, paper: bool = True, request_factory: Any = None):
        self.client = client or self._make_client(paper)
        self.request_factory = request_factory or self._alpaca_request

    @staticmethod
    def _make_client(paper: bool) -> Any:
        try:
            from alpaca.trading.client import TradingClient
        except ImportError:
            raise ConfigError("broker.kind alpaca needs alpaca-py: "
                              "pip install 'daliolite[alpaca]'") from None
        key, secret = os.environ.get("ALPACA_API_KEY"), os.environ.get("ALPACA_SECRET_KEY")
        if not key or not secret:
            raise ConfigError("broker.kind alpaca needs ALPACA_API_KEY and ALPACA_SECRET_KEY "
                              "in the environment")
        return TradingClient(key, secret, paper=paper)

    @staticmethod
    def _alpaca_request(order: MarketOrder) -> Any:
        from alpaca.trading.enums import OrderSide, TimeInForce
        from alpaca.trading.requests import MarketOrderRequest

        side = OrderSide.BUY if order.side == "buy" else OrderSide.SELL
        return MarketOrderRequest(symbol=order.symbol, notional=round(order.notional, 2),
                                  side=side, time_in_force=TimeInForce.DAY)

    def get_account(self) -> Any:
        return self.client.get_account()

    def get_all_positions(self) -> list[Any]:
        return self.client.get_all_positions()

    def submit_order(self, order_data: MarketOrder) -> Any:
        return self.client.submit_order(order_data=self.request_factory(order_data))


def _check_paper_account(doc: Any) -> None:
    cash = doc.get("cash")
    if isinstance(cash, bool) or not isinstance(cash, (int, float)) or cash < 0:
        raise InvalidStateError(f"cash must be a number >= 0, got {cash!r}")
    positions = doc.get("positions")
    if not isinstance(positions, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in positions.values()):
        raise InvalidStateError("positions must map tickers to share counts")


register_validator(PAPER_ACCOUNT, _check_paper_account)


# --- the daily check ------------------------------------------------------------------


@dataclass
class RunDecision:
    outcome: str  # rebalanced, no_action, refused, error
    reason: str
    orders: list[MarketOrder]


class DalioLite:
    def __init__(self, config_path: str | Path = "config.yaml", *, broker: Broker | None = None,
                 accept_fresh_state: bool = False, accept_rollback: bool = False):
        self.config_path = Path(config_path).resolve()
        self.config = load_config(self.config_path)
        self.state_dir = self.config.state_dir
        self.backup_manager = BackupManager(**self.config.backup)
        self.accept_fresh_state = accept_fresh_state
        self.accept_rollback = accept_rollback
        self._planned: dict[str, bytes | None] = {}
        self._broker = broker
        self.last_backup: str | None = None
        self.last_backup_error: str | None = None
        self.caught_up = False
        self.fresh_start: str | None = None

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

    def recover_state(self, *, dry_run: bool = False) -> list[str]:
        """Make every configured state file valid or a first run (the package's start-up
        guard decides; DalioLite gives its records), and return what was restored.
        Raises Refusal (a StateUnrecoverableError) when it must not trade."""
        files = self.backup_manager.state_files
        report = recover(self.backup_manager, files, facts=self._facts(),
                         accept_fresh=self.accept_fresh_state,
                         accept_rollback=self.accept_rollback, dry_run=dry_run)
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
        return [str(p) for p in report.restored]

    def _facts(self) -> HostFacts:
        """What DalioLite's own records say, and how a person runs its commands."""
        on_record = self._rebalance_on_record()
        records = {} if on_record is None else {LAST_REBALANCE: (
            on_record, f"{AUTOPILOT_STATUS} records a rebalance at {on_record.isoformat()}")}
        host = f"{sys.executable} {Path(__file__).resolve()} --config {self.config_path}"
        return HostFacts(records=records, evidence=self._evidence,
                         backup_command=self._module_command,
                         commands={"run": host,
                                   "accept_fresh": f"{host} --accept-fresh-state",
                                   "accept_rollback": f"{host} --accept-rollback"})

    @property
    def _module_command(self) -> str:
        """How the operator runs the backup module's command line on this config."""
        return f"{sys.executable} -m backup_manager --config {self.config_path}"

    def _evidence(self, path: Path) -> str | None:
        """DalioLite's own records that a lost state file existed."""
        if path.name not in (LAST_REBALANCE, PAPER_ACCOUNT):
            return None
        on_record = self._rebalance_on_record()
        if on_record is not None:
            return f"{AUTOPILOT_STATUS} records a rebalance at {on_record.isoformat()}"
        if path.name == PAPER_ACCOUNT:
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
                self._broker = AlpacaBroker(paper=brk["paper"])
            else:
                account = self.read_state(PAPER_ACCOUNT) or \
                    PaperBroker.new_account(brk["starting_cash"])
                self._broker = PaperBroker(brk["prices"], account,
                                           lambda doc: self.save_state(PAPER_ACCOUNT, doc))
        return self._broker

    # the daily check -------------------------------------------------------------------

    def run_daily_check(self, *, dry_run: bool = False, force: bool = False) -> RunDecision:
        """Recover state, decide, trade if due, record the outcome. Holds the run lock
        throughout, so a cron run and a dashboard never rebalance twice."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_path(RUN_LOCK), self.config.lock_timeout, "DalioLite run lock"):
            self.recover_state(dry_run=dry_run)
            decision = self._decide(force)
            log.info("%sdecision: %s (%s)", "dry run: " if dry_run else "", decision.outcome,
                     decision.reason)
            if dry_run:
                return decision
            # Every state file this run writes goes into one restore point, at the end.
            with self.backup_manager.changes(PointKind.RUN, f"daily check: {decision.outcome} "
                                                            f"({decision.reason})",
                                             commit_failed=self._commit_failed):
                if decision.outcome == "rebalanced":
                    self._trade(decision.orders)
                self._record(decision)
            return decision

    def _decide(self, force: bool) -> RunDecision:
        last = self.last_rebalance()
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
        account = self.broker.get_account()
        total = float(account.portfolio_value)
        if total <= 0:
            return [], 0.0
        held = {p.symbol: float(p.market_value) for p in self.broker.get_all_positions()}
        orders, drift = [], 0.0
        for symbol in sorted(set(self.config.allocation) | set(held)):
            weight = self.config.allocation.get(symbol, 0.0)
            current = held.get(symbol, 0.0)
            log.info("drift %s: %.2f%% now, %.2f%% target", symbol, 100 * current / total,
                     100 * weight)
            drift = max(drift, abs(current / total - weight))
            delta = weight * total - current
            if abs(delta) >= self.config.min_trade_usd:
                orders.append(MarketOrder(symbol, round(abs(delta), 2),
                                          "buy" if delta > 0 else "sell"))
        orders.sort(key=lambda o: o.side != "sell")  # sell first to fund the buys
        return orders, drift

    def _trade(self, orders: list[MarketOrder]) -> None:
        for order in orders:
            log.info("order: %s %s $%.2f", order.side, order.symbol, order.notional)
            self.broker.submit_order(order)
        self._save_rebalance_date(datetime.now(UTC))

    def _record(self, decision: RunDecision) -> None:
        last = None
        try:
            last = self.last_rebalance()
        except (InvalidStateError, KeyError, OSError):
            pass
        previous = self._previous_status()
        on_record = last.isoformat() if last else (
            None if self.fresh_start else previous.get("rebalance_on_record"))
        nxt = last + timedelta(days=self.config.min_days_between) if last else (
            None if self.fresh_start else previous.get("next_eligible_rebalance"))
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
        backups = self.backup_manager.status()
        backups["last_backup_error"] = (autopilot or {}).get("last_backup_error")
        python = sys.executable
        problems = status_problems(
            backups, command=f"{python} -m backup_manager --config {self.config_path}",
            host_command=f"{python} {Path(__file__).resolve()} --config {self.config_path}")
        return {"ok": not problems, "autopilot": autopilot, "backups": backups,
                "problems": [{"subject": p.subject, "kind": str(p.kind), "problem": p.what,
                              "fix": p.fix} for p in problems]}


def backup_status_facts(config_path: str | Path) -> dict[str, Any]:
    """The `backup.status_hook` of config.yaml: what DalioLite recorded about its
    backups, for `python -m backup_manager status` to show."""
    config = load_config(config_path)
    facts: dict[str, Any] = {
        "state_files": [str(p) for p in config.backup["state_files"]],
        "run_command": f"{sys.executable} {Path(__file__).resolve()} --config "
                       f"{Path(config_path).resolve()}",
    }
    try:
        doc = json.loads(read_state_file(config.state_dir / AUTOPILOT_STATUS)[0])
    except (OSError, ValueError):
        return facts
    if isinstance(doc, dict):
        facts["last_backup_error"] = doc.get("last_backup_error")
    return facts


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
    parser.add_argument("--status", action="store_true", help="print the last run and backup "
                                                              "health as JSON, then exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        bot = DalioLite(args.config, accept_fresh_state=args.accept_fresh_state,
                        accept_rollback=args.accept_rollback)
        _check_state_dir(bot.state_dir)
        if args.status:
            doc = bot.status()
            try:
                json.dump(doc, sys.stdout, indent=2, default=str)
                sys.stdout.write("\n")
                sys.stdout.flush()
            except BrokenPipeError:
                return _output_closed()
            return EXIT_OK if doc["ok"] else EXIT_ERROR
        if bot.config.broker["kind"] == "alpaca":
            _check_alpaca(bot)
        decision = bot.run_daily_check(dry_run=args.dry_run, force=args.force_rebalance)
    except StateUnrecoverableError as exc:
        log.critical("%s", exc)
        return EXIT_REFUSED
    except (BackupError, ValueError, OSError, LockTimeout) as exc:
        log.error("%s", exc)
        return EXIT_ERROR
    log.info("done: %s", decision.outcome)
    return EXIT_OK


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
