"""Orders are placed once: the intent before orders, settled before anything is decided.

Before its first order a run commits an intent: a restore point of kind `orders`,
claimed in every store (manager.claim_point), naming each planned order and its client
order id. The rebalance that follows is committed as a point that `settles` it. A run
that finds an intent no point settles (a run killed between its orders and its
commit) settles it first: it asks the broker, through the host, for each client order
id. Found means placed (open, filled, partly filled, or cancelled or expired
unfilled); not found means never placed, unless a point records the broker refusing
it (a run stopped by that refusal): rejected, not to be ordered again in that
rebalance. Every order unplaced, none rejected: the intent is void.
When the broker cannot be asked, the run refuses and places nothing. The broker's own
history is evidence too: orders under the host's client order id prefix that no point
records (a machine rebuilt from copies that never received the intent) mean a
rebalance happened that the restored state does not know of (`unrecorded`).

The host gives facts (how to ask the broker, what it answered); the rules are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from . import log
from .errors import UnfencedClaim, UnfinishedClaim, WriterConflict
from .history import History, open_intents, recorded_orders
from .points import Point, PointKind
from .problems import order_text
from .refusal import HEADLINES, HostFacts, Refusal, RefusalKind, writer_commands

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .manager import BackupManager


class OrderFact(tuple):
    """What the broker says of one order: (client order id, status, when it was
    submitted or None, filled: a fraction or dollars as the host reports it)."""

    __slots__ = ()

    def __new__(cls, client_order_id: str, status: str, submitted_at: datetime | None,
                filled: Any = None) -> OrderFact:
        return super().__new__(cls, (client_order_id, status, submitted_at, filled))

    @property
    def client_order_id(self) -> str:
        return self[0]

    @property
    def status(self) -> str:
        return self[1]

    @property
    def submitted_at(self) -> datetime | None:
        return self[2]

    @property
    def rejected(self) -> bool:
        return self.status == "rejected"


class Settlement:
    """How the intents no point settled ended: `intents` (their points, oldest first),
    `placed` (what the broker holds of their orders), `missing` (ids it holds nothing
    under), `rejected`. `void` when none of the orders was placed or rejected; `when`,
    the first accepted order's time: the rebalance's."""

    def __init__(self, intents: list[Point], found: dict[str, OrderFact | None]):
        self.intents = intents
        self.orders = [o for p in intents for o in p.details.get("orders", ())]
        self.placed = [f for f in found.values() if f is not None and not f.rejected]
        self.rejected = [f for f in found.values() if f is not None and f.rejected]
        self.missing = [i for i, f in found.items() if f is None]
        times = [f.submitted_at for f in self.placed if f.submitted_at is not None]
        self.when = min(times) if times else None

    @property
    def void(self) -> bool:
        return not self.placed and not self.rejected

    @property
    def rejected_symbols(self) -> list[str]:
        ids = {f.client_order_id for f in self.rejected}
        return sorted({o.get("symbol") for o in self.orders if o.get("client_order_id") in ids})

    @property
    def unplaced_symbols(self) -> set[str]:
        """The symbols none of whose orders the broker holds: all a run finishing this
        rebalance may still order (an order found, whatever became of it, had its turn)."""
        found = {f.client_order_id for f in self.placed + self.rejected}
        done = {o.get("symbol") for o in self.orders if o.get("client_order_id") in found}
        return {o.get("symbol") for o in self.orders} - done

    @property
    def sequences(self) -> list[int]:
        return [p.sequence for p in self.intents]

    def details(self) -> dict[str, Any]:
        """What the point that settles them records."""
        return {"settles": self.sequences,
                "placed": sorted(f.client_order_id for f in self.placed),
                "rejected": sorted(f.client_order_id for f in self.rejected),
                "void": self.void}


def claim_intent(manager: BackupManager, orders: list[dict[str, Any]], facts: HostFacts, *,
                 details: Mapping[str, Any] | None = None) -> tuple[Point, dict[str, str]]:
    """Commit the intent before `orders` (each with its client order id), claimed in
    every store (manager.claim_point). A claim another writer holds first is a refusal
    (recorded for `status`) naming the ways out: nothing may be placed."""
    try:
        return manager.claim_point(PointKind.ORDERS, f"intent: {len(orders)} order(s)",
                                   details={**(details or {}), "orders": orders})
    except WriterConflict as exc:
        kind = RefusalKind.FENCE if isinstance(exc, UnfencedClaim) else RefusalKind.WRITER
        commands = writer_commands(facts)
        if isinstance(exc, UnfinishedClaim):
            kind = RefusalKind.INTENT
            commands = [facts.command("run", "(the host's daily check)") + "  # again: it "
                        "settles that claim with the broker, then decides"]
        refusal = Refusal(kind, HEADLINES[kind], [("site", f"{exc}; no order was placed")],
                          [*commands, f"{facts.backup_command} status"])
        _record_refusal(manager, refusal)
        raise refusal from None


def settle(manager: BackupManager, history: History,
           ask: Callable[[str], OrderFact | None], facts: HostFacts, *,
           dry_run: bool = False) -> Settlement | None:
    """Settle the intents no point settles (None: there are none). `ask(client order
    id)` is the host's broker lookup: an OrderFact, or None when the broker holds no
    such order; whatever it raises means the broker cannot be asked, and the run is
    refused (recorded for `status`, unless a dry run): nothing may be placed while an
    earlier run's orders are unknown."""
    intents = open_intents(history)
    if not intents:
        return None
    refused = _rejected_on_record(history)
    found: dict[str, OrderFact | None] = {}
    for intent in intents:
        for order in intent.details.get("orders", ()):
            order_id = order.get("client_order_id")
            if order_id in refused:  # the broker holds nothing of it: no need to ask
                found[order_id] = OrderFact(order_id, "rejected", None)
                continue
            try:
                found[order_id] = ask(order_id)
            except Exception as exc:  # the host's broker failing, whatever its kind
                refusal = Refusal(
                    RefusalKind.INTENT, "an earlier run's orders cannot be settled: the "
                    "broker cannot be asked",
                    [(f"restore point {intent.sequence}",
                      f"intent of {intent.time:%Y-%m-%d %H:%M} UTC: " + ", ".join(
                          order_text(o) for o in intent.details.get("orders", ())))],
                    [facts.command("run", "(the host's daily check)") + "  # again, once "
                     f"the broker answers ({exc})", f"{facts.backup_command} status"])
                if not dry_run:
                    _record_refusal(manager, refusal)
                raise refusal from None
    settlement = Settlement(intents, found)
    log.warning("%ssettling restore point(s) %s: %s", "dry run: would be " if dry_run else "",
                ", ".join(map(str, settlement.sequences)),
                "void: no order was placed" if settlement.void else
                f"{len(settlement.placed)} order(s) placed, {len(settlement.rejected)} "
                f"rejected, {len(settlement.missing)} never placed")
    return settlement


def unrecorded(history: History, orders: Iterable[OrderFact]) -> list[OrderFact]:
    """Orders of the host's (found at the broker under its prefix) that no point
    records, oldest first: a rebalance the restored state does not know of."""
    known = recorded_orders(history)
    found = [o for o in orders if o.client_order_id not in known and not o.rejected]
    return sorted(found, key=lambda o: (o.submitted_at is None, o.submitted_at or 0,
                                        o.client_order_id))


def _rejected_on_record(history: History, within: int = 500) -> set[str]:
    """The client order ids the newest `within` points record as rejected (by the run
    the broker refused them to, or by a settlement)."""
    found: set[str] = set()
    for n, point in enumerate(history):
        if n >= within:
            break
        found.update(i for i in point.details.get("rejected", ()) if isinstance(i, str))
    return found


def _record_refusal(manager: BackupManager, refusal: Refusal) -> None:
    from datetime import UTC

    try:
        manager.folder.record_recovery({"time": datetime.now(UTC).isoformat(),
                                        "refused": refusal.as_record(), "unseen": {}})
    except OSError as exc:
        log.error("cannot record the refusal in %s: %s", manager.backup_dir, exc)
