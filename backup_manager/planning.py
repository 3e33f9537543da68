"""Deciding recovery, changing nothing: what to install, catch up and commit, or why to
refuse (plan_recovery)."""

from __future__ import annotations

from pathlib import Path

from . import log
from .atomic import unlink_quietly, write_temp
from .errors import BackupError
from .formats import state_key
from .manager import BackupManager
from .refusal import (
    HEADLINES,
    HostFacts,
    Refusal,
    RefusalKind,
    Refusals,
    fresh_commands,
    rollback_commands,
    unseen_text,
)
from .restore import Search, fetch_entry, find_in_points, find_newest_valid
from .rules import (
    LiveFile,
    RecoveryPlan,
    check_clock,
    check_identity,
    check_records,
    check_writers,
    older_than_newest,
)

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it


def plan_recovery(manager: BackupManager, paths: list[Path], facts: HostFacts, *,
                  accept_fresh: bool = False, accept_rollback: bool = False,
                  accept_identity: bool = False, accept_takeover: bool = False,
                  require_fence: bool = False, from_reachable: bool = False,
                  dry_run: bool = False) -> RecoveryPlan:
    """Decide, changing nothing: what to install, catch up, commit, or why to refuse."""
    live = {path: LiveFile(path) for path in paths}
    # backups/ is made (if it can be) before it is listed: on a new machine it is not
    # there yet, and its absence is no store that cannot be seen.
    problem = None if dry_run else _backups_problem(manager)
    history = manager.history()
    plan = RecoveryPlan(live, history)
    plan.backups_problem = problem
    refusals = Refusals()
    sources = list(manager.sources())
    search = Search()
    for location, store in sources:
        if location in history.unseen:
            search.cannot_ask(location, store, f"cannot list: {history.unseen[location]}")
    for path, lf in live.items():
        if lf.status == "unreadable":
            refusals.add(RefusalKind.UNREADABLE, str(path), f"cannot be read ({lf.detail})",
                         f"ls -l {path}  # fix what stops it being read, then run again")
    lost = [p for p, lf in live.items() if lf.lost]
    plan.taking_over = accept_takeover
    if require_fence and history.unseen:
        refusals.add(RefusalKind.FENCE, "site", unseen_text(search) + "; a newer writer "
                     "there would go unseen", f"{facts.backup_command} status")
    top = plan.newest.sequence if plan.newest is not None else 0
    newer = sorted(n for n in history.unknown_key if n > top)
    if newer:
        # Not a forgery to step over: a key rotated on another machine (or an old key
        # file). Going on from the older point would be a rollback nobody chose.
        refusals.add(RefusalKind.KEY, "site", f"restore point(s) {', '.join(map(str, newer))}"
                     f": {history.unknown_key[newer[-1]]}",
                     f"{facts.backup_command} key check  # which key each store needs; put "
                     "that key's line (from the machine that rotated it) in the key file")
    if plan.newest is not None and not accept_takeover:
        check_writers(manager, plan, facts, refusals)
    if plan.newest is None:
        _plan_without_points(manager, plan, lost, facts, refusals, sources, search,
                             accept_fresh, from_reachable)
    else:
        _plan_with_points(manager, plan, facts, refusals, sources, search, accept_fresh,
                          accept_rollback, from_reachable)
    if not accept_identity:
        check_identity(plan, facts, refusals)
    check_records(plan, facts, refusals)
    check_clock(plan, facts, refusals)
    for path in plan.installs if plan.backups_problem else ():
        # A missing file needs backups/ only to be read; one that is there (invalid) must
        # be kept under corrupt/ before it is replaced (promise 4), which needs writing.
        if plan.live[path].data is not None:
            refusals.add(RefusalKind.BACKUPS, str(path), f"is {plan.live[path].status} and "
                         f"would have to be kept under {manager.backup_dir}/corrupt/ before it "
                         f"is replaced, but the backups folder cannot be written: "
                         f"{plan.backups_problem}",
                         f"ls -ld {manager.backup_dir}  # make it writable, then run again")
    plan.unseen.update(search.unreachable_ids)
    if refusals.reasons:
        plan.refusal = Refusal(refusals.kind, HEADLINES[refusals.kind], refusals.reasons,
                               refusals.commands + [f"{facts.backup_command} status"
                                                    "  # what every store holds"])
    return plan


def _plan_with_points(manager: BackupManager, plan: RecoveryPlan, facts: HostFacts,
                      refusals: Refusals, sources: list, search: Search, accept_fresh: bool,
                      accept_rollback: bool, from_reachable: bool) -> None:
    newest = plan.newest
    for path, lf in plan.live.items():
        entry = newest.entry(path.name)
        if lf.status == "valid":
            if entry is not None and lf.digest == entry.sha256 or plan.taking_over:
                plan.kept.append(path)  # a take-over keeps this machine's state, whole
                continue
            if plan.other_writer:
                continue
            older = older_than_newest(manager, plan, path, lf, sources, search)
            if older is None:
                refusals.add(RefusalKind.DAMAGED, str(path),
                             f"holds bytes no restore point holds, and the newest point's "
                             f"backup {entry.backup} cannot be read to compare them",
                             f"{facts.backup_command} verify")
            elif older and accept_rollback:
                plan.rolled_back.append(path)
            elif older:
                refusals.add(RefusalKind.ROLLBACK, str(path), older, *rollback_commands(
                    facts, path))
            else:
                plan.catch_up.append(path)
            continue
        if lf.status != "missing" and lf.status != "invalid":
            continue
        if entry is None:
            # No point records the file: only the host's own records can say it existed.
            why = [f"is invalid ({lf.detail})"] if lf.status == "invalid" else []
            hint = facts.evidence(path)
            if hint:
                why.append(hint)
            if not why:
                plan.first_run.append(path)
            elif accept_fresh:
                plan.fresh.append(path)
            else:
                refusals.add(RefusalKind.LOST, str(path), "; ".join(why) + "; no restore point "
                             "records it", *fresh_commands(facts))
            continue
        if search.unreachable and not from_reachable:
            refusals.add(RefusalKind.UNSEEN, str(path), "must be installed from restore point "
                         f"{newest.sequence}, but " + unseen_text(search),
                         f"{facts.backup_command} restore --all --from-reachable --yes"
                         "  # install from the stores that answer, on purpose")
            continue
        chosen = fetch_entry(sources, state_key(path), entry, search)
        if chosen is None and search.unreachable and not from_reachable:
            refusals.add(RefusalKind.UNSEEN, str(path), f"{entry.backup} could not be "
                         "fetched: " + unseen_text(search),
                         f"{facts.backup_command} restore --all --from-reachable --yes")
        elif chosen is None and accept_fresh:
            plan.fresh.append(path)
        elif chosen is None:
            older = find_in_points(plan.history, sources, state_key(path), Search())
            rollback = [f"{facts.backup_command} restore {path} --yes  # restore point "
                        f"{older[1].sequence}'s, the newest that verifies: a rollback, "
                        "acknowledged at the next run"] if older else []
            refusals.add(RefusalKind.DAMAGED, str(path), f"is {lf.status}; restore point "
                         f"{newest.sequence} names {entry.backup}, and no store holds those "
                         "bytes intact", f"{facts.backup_command} verify", *rollback,
                         *fresh_commands(facts))
        else:
            plan.installs[path] = chosen


def _plan_without_points(manager: BackupManager, plan: RecoveryPlan, lost: list[Path],
                         facts: HostFacts, refusals: Refusals, sources: list,
                         search: Search, accept_fresh: bool, from_reachable: bool) -> None:
    history = plan.history
    for path, lf in plan.live.items():
        if lf.status == "valid":
            plan.kept.append(path)
    for path in lost:
        lf = plan.live[path]
        chosen = find_newest_valid(sources, state_key(path), None, search.unreachable_ids,
                                   search)
        if search.unreachable and not from_reachable:
            refusals.add(RefusalKind.UNSEEN, str(path), "is " + lf.status + "; "
                         + unseen_text(search),
                         f"{facts.backup_command} restore {path} --from-reachable --yes"
                         "  # install from the stores that answer, on purpose")
            continue
        if chosen is not None:
            plan.installs[path] = chosen
            continue
        reasons = []
        if lf.status == "invalid":
            reasons.append(f"exists but is invalid ({lf.detail})")
        if search.found:
            reasons.append(f"{search.found} backup(s) exist but none is valid")
        if history is not None and history.damaged:
            reasons.append("restore point(s) " + ", ".join(map(str, sorted(history.damaged)))
                           + " exist but none can be read")
        hint = facts.evidence(path)
        if hint:
            reasons.append(hint)
        if not reasons:
            log.info("no %s and no backups of it: first run for this file", path.name)
            plan.first_run.append(path)
        elif accept_fresh:
            plan.fresh.append(path)
        else:
            refusals.add(RefusalKind.LOST, str(path), "; ".join(reasons),
                         f"{facts.backup_command} verify",
                         *fresh_commands(facts))


def _backups_problem(manager: BackupManager) -> str | None:
    """None when backups/ can be created, written and locked; else why not."""
    try:
        with manager.folder.locked():
            unlink_quietly(write_temp(manager.backup_dir, ".probe", b"", durable=False))
    except (BackupError, OSError) as exc:
        log.error("backups folder %s cannot be used: %s", manager.backup_dir, exc)
        return str(exc)
    return None
