"""The Backups page of DalioLite's Streamlit dashboard.

    .venv/bin/streamlit run dashboard/backups.py --server.address 127.0.0.1 \\
        -- --config config.yaml [--max-age-hours 26]

or copy this file into an existing DalioLite dashboard's pages/ folder. The config
is `--config` after `--` on the streamlit command line, else the DALIO_CONFIG
environment variable, else ./config.yaml; DALIO_BACKUP_MAX_AGE_HOURS stands in for
`--max-age-hours` (the age check of `python -m backup_manager status`, off by default).

At a glance: one health line per state file (green, amber or red by the rules of
`python -m backup_manager status`), a timeline of the backups of each state file in
backups/, the mirrors and S3, the copy queues, the last verify and drill with
buttons to run them, and a restore that shows what it installs and what it
replaces and asks for the state file's name.

Everything is read through names in backup_manager.__all__: the installation's Site
(its manager, status and run lock), BackupManager's queries, plan_restore() and a
dry-run install_restore(), rehearse(). The page writes nothing unless a button is
pressed; a restore takes the backups folder's lock as the command line does, and
waits for, then refuses while, DalioLite's run lock (the one the Site names) is held. Served beyond
localhost (streamlit's server.address not a loopback address, or a request through a
proxy), the page refuses to restore unless config.yaml allows it
(backup.dashboard_remote_restore: true, for a page behind authentication).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import streamlit as st

from backup_manager import (
    LIVE_BACKED_UP,
    LIVE_OLDER,
    LIVE_UNKNOWN,
    BackupError,
    ConfigError,
    LockTimeout,
    NoValidBackupError,
    Site,
    age,
    read_state_file,
    rehearse,
    state_key,
    status_problems,
)
from backup_manager.config import dashboard_remote_restore, load_config_file

RUN_LOCK_WAIT = 5.0  # a click waits at most this long for a running daily check
NEWEST = "the newest restore point's (what an automatic restore installs)"
COPY_ORDER = ["local", "mirror", "cloud"]
COPY_COLOURS = ["#1f77b4", "#2ca02c", "#ff7f0e"]
# Headers a reverse proxy adds to what it forwards (nginx, Apache, Caddy, Traefik).
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip")


# --- where the site is ----------------------------------------------------------------


def options(argv: list[str]) -> tuple[Path, float | None]:
    """The config file and the age limit, from the command line or the environment."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    parser.add_argument("--max-age-hours")
    args, _ = parser.parse_known_args(argv)
    config = args.config or os.environ.get("DALIO_CONFIG") or "config.yaml"
    limit = args.max_age_hours or os.environ.get("DALIO_BACKUP_MAX_AGE_HOURS") or None
    try:
        hours = float(limit) if limit is not None else None
    except ValueError:
        raise ConfigError(f"--max-age-hours must be a number, got {limit!r}") from None
    if hours is not None and not hours > 0:
        raise ConfigError(f"--max-age-hours must be a number > 0, got {limit}")
    return Path(config).resolve(), hours


# --- who can reach the page -----------------------------------------------------------


def served_beyond_localhost() -> str | None:
    """Why people on other machines can reach this page; None when only this machine can
    (and people it lets in: an SSH tunnel's users, whom SSH authenticated)."""
    # Why the bind address first: it is the one fact no client can forge. Bound to a
    # loopback address, the page is reachable from elsewhere only through something the
    # operator set up on this machine (an SSH tunnel or a reverse proxy); unset, streamlit
    # listens on every interface. Why the request after it: it can only add doubt, never
    # remove it. A Host naming another machine, or a proxy's forwarding header, shows a
    # reverse proxy serving the page to others; a client writes these headers itself, so
    # a Host of "localhost" vouches for nothing and never unlocks a page bound elsewhere.
    address = st.get_option("server.address")
    if not is_loopback(address):
        return (f"the server listens on {address or 'every network interface'} "
                "(streamlit's server.address)")
    headers = st.context.headers
    asked_as = headers.get("Host")
    if asked_as and not is_loopback(urlsplit(f"//{asked_as}").hostname):
        return f"the page was asked for as {asked_as}, a name other than localhost"
    for header in FORWARDING_HEADERS:
        if header in headers:
            return f"the request came through a proxy (it carries {header})"
    return None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def restore_refused(site: Site) -> str | None:
    """Why the page must not restore here, from config.yaml as it is now; None: it may."""
    beyond = served_beyond_localhost()
    if beyond is None:
        return None
    try:
        allowed = dashboard_remote_restore(load_config_file(site.path).get("backup"))
    except BackupError as exc:
        return f"{beyond}, and config.yaml cannot be read to see if that is allowed: {exc}"
    return None if allowed else beyond


def show_restore_refused(site: Site, why: str, path: Path) -> None:
    port = st.get_option("server.port")
    st.warning(
        f"**Restore is off on this page**: {plain(why)}, so anyone who reaches it could "
        "press Restore. To restore, either run on this machine "
        f"`{site.command(f'restore {path.name} --yes')}`, or reach the page through an SSH "
        f"tunnel: start it with `--server.address 127.0.0.1`, run `ssh -L {port}:127.0.0.1:"
        f"{port} YOU@THIS_MACHINE` and open http://localhost:{port}. Behind a reverse proxy "
        "that asks for a login, allow restores here with `dashboard_remote_restore: true` "
        f"under `backup:` in {plain(str(site.path))}.",
        icon=":material/lock:")


# --- health ---------------------------------------------------------------------------


def file_health(site: Site, row: dict) -> tuple[str, list[str], str]:
    """(green | amber | red, reasons, fix) of one state file. Red: status reports a
    PROBLEM about it (its fix is status's); amber: no problem, but its live file is
    not what its newest backup holds (missing, invalid, restored to an older backup:
    the next DalioLite run sees to it); green: all is well."""
    problems = [(p.what, p.fix) for p in status_problems(
        {"backup_dir": str(site.manager.backup_dir), "state_files": [row], "targets": []},
        site.max_age_hours, site.command("").rstrip())]
    if problems:
        return "red", [p for p, _ in problems], "; ".join(f"`{f}`" for _, f in problems)
    live, detail = row["live"], row["live_detail"]
    if live in (None, LIVE_BACKED_UP):
        return "green", [], ""
    if live == LIVE_OLDER:
        return "amber", [f"the live file {detail}"], \
            ("nothing if the roll-back was meant; else restore the newest backup below")
    if live == LIVE_UNKNOWN:
        return "amber", [f"backups cannot be listed: {detail}"], \
            f"check the backups folder {site.manager.backup_dir}"
    reason = f"the live file {site.live_path(row)} is {live}" + (f": {detail}" if detail else "")
    return "amber", [reason], ("the next DalioLite run restores it from the newest valid "
                               "backup, or restore it below")


def show_health(site: Site, facts: dict, problems: list[str]) -> None:
    st.subheader("Health")
    if problems:
        st.error(f"status: PROBLEM ({len(problems)}): run `{site.command('status')}` for the "
                 "same report")
    else:
        st.success("status: OK")
    mine = set()
    for row in facts["state_files"]:
        colour, reasons, fix = file_health(site, row)
        mine.update(reasons if colour == "red" else [])
        name = row["state_file"]
        if colour == "green":
            st.success(f"**{name}**: OK. Newest valid backup `{row['newest_valid']}`, "
                       f"{age(row['newest_valid_age_seconds'])} old; "
                       f"{row['complete']} of {row['backups']} backup(s) complete; "
                       f"live file {row['live'] or 'not configured'}.",
                       icon=":material/check_circle:")
        else:
            text = f"**{name}**: " + "; ".join(map(plain, reasons)) + f". **Fix:** {fix}"
            if colour == "red":
                st.error(text, icon=":material/error:")
            else:
                st.warning(text, icon=":material/warning:")
    refused = (facts.get("recovery") or {}).get("refused")
    for problem in problems:
        what, fix = problem["problem"], problem["fix"]
        if problem["kind"] == "host-refuses" and refused:
            # The refusal's own shape: its headline, a reason a line, numbered commands.
            st.error("\n".join(
                [f"**DalioLite refuses to trade**: {plain(refused['headline'])}", ""]
                + [f"- {plain(subject)}: {plain(why)}" for subject, why in refused["reasons"]]
                + ["", "**Fix**, one of:", ""]
                + [f"{n}. `{c}`" for n, c in enumerate(refused["commands"], 1)]),
                icon=":material/error:")
            continue
        if what not in mine:  # about the site: copies, the host's record, no state files
            st.error(f"**site**: {plain(what)}. **Fix:** `{fix}`", icon=":material/error:")
    st.caption(f"config {site.path} · backups {facts['backup_dir']} · "
               f"{facts['disk_bytes']} bytes on disk · "
               + (f"max age {site.max_age_hours:g} h" if site.max_age_hours
                  else "no age limit (--max-age-hours)"))


def plain(text: str) -> str:
    """Text from the module shown as itself in Markdown: no emphasis, strike-through or
    formula made of the `*`, `~` or `$` in a path or an error."""
    for char in "\\*~$`":
        text = text.replace(char, "\\" + char)
    return text


# --- timeline -------------------------------------------------------------------------


@st.cache_data(ttl=60, show_spinner=False)
def cloud_names(label: str, _manager) -> tuple[list[str], str | None]:
    """The bucket's names (one LIST, kept a minute so each click does not ask again)."""
    try:
        return _manager.cloud_listing(), None
    except (BackupError, OSError) as exc:
        return [], str(exc)


def timeline_rows(site: Site, facts: dict) -> tuple[list[dict], list[str]]:
    """One row per copy of a backup: local (backups/), mirror or cloud; and what
    could not be listed."""
    manager, rows, unseen = site.manager, [], []

    def add(state_file: str, copy: str, where: str, name: str, when: datetime,
            complete: bool) -> None:
        rows.append({"state_file": state_file, "copy": copy, "where": where, "backup": name,
                     "time": when, "shown_time": f"{when:%Y-%m-%d %H:%M:%S} UTC",
                     "status": "complete" if complete else "incomplete"})

    keys = [state_key(s["state_file"]) for s in facts["state_files"]]
    names = None
    if manager.cloud_label() is not None:
        names, error = cloud_names(manager.cloud_label(), manager)
        if error:
            unseen.append(f"{manager.cloud_label()}: {error}")
            names = None
    found, missed = manager.copies_of(keys, names)
    for where, label, backup, complete in found:
        add(backup.stem + backup.suffix, where, label, backup.name, backup.when, complete)
    unseen += missed
    return rows, list(dict.fromkeys(unseen))


def show_timeline(site: Site, facts: dict) -> None:
    st.subheader("Backups over time")
    rows, unseen = timeline_rows(site, facts)
    for problem in unseen:
        st.warning(f"cannot list {problem}")
    if not rows:
        st.info("no backups yet")
        return
    import pandas as pd  # streamlit's own dependency

    data = pd.DataFrame(rows)
    spec = {
        "width": "container",
        "height": {"step": 14},
        "mark": {"type": "point", "filled": True, "size": 80, "opacity": 0.85},
        "encoding": {
            "x": {"field": "time", "type": "temporal", "title": "backup time (UTC)",
                  "scale": {"type": "utc"}},
            "y": {"field": "state_file", "type": "nominal", "title": None,
                  "axis": {"labelLimit": 300}},
            "yOffset": {"field": "copy", "type": "nominal", "sort": COPY_ORDER,
                        "scale": {"domain": COPY_ORDER}},
            "color": {"field": "copy", "type": "nominal", "title": "copy",
                      "scale": {"domain": COPY_ORDER, "range": COPY_COLOURS}},
            "shape": {"field": "status", "type": "nominal", "title": "sidecar",
                      "scale": {"domain": ["complete", "incomplete"],
                                "range": ["circle", "triangle-up"]}},
            "tooltip": [{"field": f, "type": "nominal"}
                        for f in ("backup", "copy", "where", "shown_time", "status")],
        },
    }
    try:
        st.vega_lite_chart(data, spec, width="stretch")
    except TypeError:  # streamlit before `width`
        st.vega_lite_chart(data, spec, use_container_width=True)
    st.caption("Each point is one copy of a backup: blue in the backups folder, green in a "
               "mirror folder, orange in S3; a triangle has no sidecar (incomplete).")


# --- copy queues ----------------------------------------------------------------------


POINTS_SHOWN = 20


def point_rows(site: Site) -> tuple[list[dict], dict[str, str]]:
    """The history, newest first (at most POINTS_SHOWN points), and the stores it could
    not see: one row per restore point, with where its copies are."""
    history = site.manager.history()
    labels = {location: store.label for location, store in site.manager.sources()}
    rows = []
    for number in sorted(history.locations, reverse=True)[:POINTS_SHOWN]:
        point = history.point(number)
        where = ", ".join(labels.get(loc, loc) for loc in history.where(number))
        if point is None:
            rows.append({"point": number, "time (UTC)": "-", "kind": "DAMAGED",
                         "writer": "-", "why": history.damaged.get(number, ""),
                         "stores": where})
            continue
        rows.append({"point": number, "time (UTC)": f"{point.time:%Y-%m-%d %H:%M:%S}",
                     "kind": point.kind, "writer": point.writer, "why": point.reason,
                     "stores": where})
    return rows, history.unseen


def show_points(site: Site) -> None:
    st.subheader("Restore points")
    rows, unseen = point_rows(site)
    for location, why in unseen.items():
        st.warning(f"cannot see {location}: {why}")
    if not rows:
        st.info("no restore points yet: the next DalioLite run commits the first")
        return
    st.caption("Each point names the backup of every state file at one moment; recovery "
               "installs the newest whose backups verify, never loose files.")
    st.dataframe(rows, hide_index=True)


def show_copies(site: Site, facts: dict) -> None:
    st.subheader("Copy queues")
    if not facts["targets"]:
        st.info("no mirror folder or S3 bucket configured: every backup stays on this "
                "machine (backup.mirror_dirs, backup.cloud_enabled)")
        return
    st.dataframe([{
        "target": t["target"], "pending": t["pending"],
        "oldest pending": age(t["oldest_pending_age_seconds"]) if t["pending"] else "-",
        "conflicts": t["conflicts"], "last success": t["last_success"] or "never",
        "last error": t["last_error"] or "",
    } for t in facts["targets"]], hide_index=True)
    pending = site.manager.pending_copies()
    if pending:
        labels = site.manager.copy_targets()
        with st.expander(f"{len(pending)} pending copy(ies)"):
            st.dataframe([{"target": labels.get(c.target, c.target), "backup": c.name,
                           "queued": f"{c.queued_at:%Y-%m-%d %H:%M:%S} UTC",
                           "attempts": c.attempts, "conflict": c.conflict,
                           "last error": c.last_error or ""} for c in pending],
                         hide_index=True)
        st.caption(f"`{site.command('sync')}` sends them now; each backup and DalioLite "
                   "run also tries.")


# --- verify and drill -----------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def last_runs() -> dict:
    """The last verify and drill of each site, kept by this dashboard process (in
    memory: the page writes no file of its own)."""
    return {}


def show_checks(site: Site, facts: dict) -> None:
    st.subheader("Verify and drill")
    runs = last_runs().setdefault(str(site.path), {})
    left, right = st.columns(2)
    cloud = site.manager.cloud_label() is not None
    with left:
        also = st.checkbox("also the copies in S3", key="verify_cloud") if cloud else False
        if st.button("Run verify", key="run_verify",
                     help="checks checksum, sidecar and content of every backup; "
                          "changes nothing"):
            with st.spinner("verifying"):
                try:
                    report = site.manager.verify(cloud=also)
                    runs["verify"] = {"at": now(), "ok": report.ok,
                                      "checked": len(report.items),
                                      "problems": [i._asdict() for i in report.problems]}
                except (BackupError, OSError) as exc:
                    runs["verify"] = {"at": now(), "ok": False, "checked": 0,
                                      "error": str(exc), "problems": []}
        result = runs.get("verify")
        if result is None:
            st.caption("no verify run from this dashboard yet")
        else:
            summary = (f"last verify {result['at']}: checked {result['checked']} file(s), "
                       + ("all ok" if result["ok"] else
                          result.get("error") or f"{len(result['problems'])} problem(s)"))
            (st.success if result["ok"] else st.error)(summary)
            if result["problems"]:
                st.dataframe(result["problems"], hide_index=True)
    with right:
        from_cloud = st.checkbox("from S3 alone (a new machine)", key="drill_cloud") \
            if cloud else False
        if st.button("Run drill", key="run_drill",
                     help="restores every state file into a temporary folder; changes "
                          "nothing live"):
            with st.spinner("rehearsing recovery"):
                files = [site.live_path(s) for s in facts["state_files"]]
                try:
                    results = rehearse(site.manager, files, cloud=from_cloud)
                    runs["drill"] = {"at": now(), "results": results, "error": None}
                except (BackupError, OSError) as exc:
                    runs["drill"] = {"at": now(), "results": [], "error": str(exc)}
        result = runs.get("drill")
        if result is None:
            st.caption("no drill run from this dashboard yet")
        else:
            failed = [d for d in result["results"] if not d["ok"]]
            ok = not failed and not result["error"] and result["results"]
            if result["error"] or not result["results"]:
                said = result["error"] or "no state files to rehearse"
            elif failed:
                said = f"{len(failed)} state file(s) cannot be recovered"
            else:
                said = "every state file can be recovered"
            summary = f"last drill {result['at']}: {said}"
            (st.success if ok else st.error)(summary)
            if result["results"]:
                st.dataframe([{"state file": Path(d["state_file"]).name,
                               "backup": d["backup"] or "-", "source": d["source"] or "-",
                               "time to recover": f"{d['seconds'] * 1000:.0f} ms",
                               "result": "ok" if d["ok"] else d["error"]}
                              for d in result["results"]], hide_index=True)


def now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"


# --- restore --------------------------------------------------------------------------


def show_restore(site: Site, facts: dict) -> None:
    st.subheader("Restore")
    rows = {s["state_file"]: s for s in facts["state_files"]}
    if not rows:
        st.info("no state files configured and no backups found")
        return
    name = st.selectbox("State file", list(rows), key="restore_file")
    path = site.live_path(rows[name])
    key = state_key(name)
    stamps = {b.name: b.name[len(key.stem) + 1: len(b.name) - len(key.suffix)]
              for b in site.manager.list_backups(name) if b.complete}
    pick = st.selectbox("Backup", [NEWEST, *stamps], key="restore_backup")
    stamp = stamps.get(pick)  # the whole stamp of a name: exactly that backup
    try:
        plan = site.manager.plan_restore(path, timestamp=stamp)
        preview = site.manager.install_restore(plan, dry_run=True)
    except NoValidBackupError as exc:
        st.error(f"nothing to restore: {exc}")
        show_outcome()
        return
    except (BackupError, OSError) as exc:
        st.error(f"cannot plan a restore of {path}: {exc}")
        show_outcome()
        return
    if plan.current:
        st.markdown(f"`{path}` already holds the newest restore point's "
                    f"({preview.point}) state: nothing to restore")
        show_outcome()
        return
    if preview.behind:
        st.warning(f"A rollback: this is restore point {preview.point}, {preview.behind} "
                   f"point(s) older than the newest ({preview.newest_point}). DalioLite "
                   "refuses to trade until the rollback is acknowledged on its command line "
                   "(--accept-rollback); restoring the newest again before then undoes it.")
    installs, replaces = st.columns(2)
    with installs:
        st.markdown(f"**Installs** `{preview.name}` from {preview.location}, made "
                    f"{preview.timestamp:%Y-%m-%d %H:%M:%S} UTC, {preview.size} bytes "
                    "(checksum and content verified)")
        st.code(shown_bytes(plan.chosen.data), language="json")
        for backup, why in preview.skipped:
            st.caption(f"passed over {backup}: {why}")
    with replaces:
        current = live_bytes(path)
        if not preview.changed:
            st.markdown(f"**Replaces** nothing: `{path}` already holds this backup")
        elif preview.replaced is None:
            st.markdown(f"**Replaces** nothing: `{path}` is missing")
        else:
            where = ("kept under backups/replaced/ unless a backup already holds it"
                     if preview.replaced == "valid" else "kept under backups/corrupt/")
            st.markdown(f"**Replaces** the {preview.replaced} `{path}` "
                        f"({len(current or b'')} bytes), {where}")
            st.code(shown_bytes(current or b""), language="json")
    refused = restore_refused(site) if preview.changed else None
    if refused:
        show_restore_refused(site, refused, path)
    elif preview.changed:
        st.text_input(f"Type {path.name} to confirm", key="restore_confirm")
        st.button("Restore", type="primary", key="restore_button", on_click=restore,
                  args=(site, path, stamp, preview.name))
    show_outcome()


def live_bytes(path: Path) -> bytes | None:
    try:
        return read_state_file(path)[0]
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"(cannot read: {exc})".encode()


def shown_bytes(data: bytes, limit: int = 4000) -> str:
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n..." if len(data) > limit else "")


def restore(site: Site, path: Path, stamp: str | None, shown: str) -> None:
    """The Restore button: exactly the backup shown, once its name is typed, under
    DalioLite's run lock (never while a run holds it) and the backups folder's lock."""
    refused = restore_refused(site)
    if refused:
        return outcome("error", f"Not restored: {refused}, and config.yaml does not allow "
                                "restores from such a page (backup.dashboard_remote_restore).")
    typed = (st.session_state.get("restore_confirm") or "").strip()
    if typed != path.name:
        return outcome("error", f"Not restored: type {path.name} exactly to confirm"
                                + (f" (got {typed!r})" if typed else "") + ".")
    wait = min(site.run_lock_timeout, RUN_LOCK_WAIT)
    try:
        with site.host_locked(timeout=wait):
            try:
                plan = site.manager.plan_restore(path, timestamp=stamp)
                now_chosen = plan.chosen.backup.name if plan.chosen is not None else None
                if now_chosen != shown:
                    return outcome("error", f"Not restored: the backups changed since the "
                                            f"page showed {shown} (now "
                                            f"{now_chosen or 'nothing'}); look again and "
                                            "confirm.")
                result = site.manager.install_restore(plan)  # the backups folder's lock
            except (BackupError, OSError) as exc:
                return outcome("error", f"Not restored: {exc}")
    except LockTimeout:
        return outcome("error", f"Not restored: DalioLite is running (its run lock "
                                f"{site.run_lock} was held for {wait:g} s). Try again "
                                "when the run is over.")
    except OSError as exc:
        return outcome("error", f"Not restored: cannot take DalioLite's run lock: {exc}")
    st.session_state["restore_confirm"] = ""
    kept = (f" The replaced file is kept as {site.manager.backup_dir / result.kept_as}."
            if result.kept_as else "")
    outcome("success", f"Restored {path} from {result.name}.{kept}")


def outcome(kind: str, text: str) -> None:
    st.session_state["restore_outcome"] = (kind, text)


def show_outcome() -> None:
    shown = st.session_state.pop("restore_outcome", None)
    if shown:
        (st.success if shown[0] == "success" else st.error)(shown[1])


# --- the page -------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="DalioLite · Backups", page_icon="💾", layout="wide")
    st.title("Backups")
    try:
        config_path, max_age = options(sys.argv[1:])
        if not config_path.is_file():
            raise ConfigError(f"config file {config_path} does not exist: start the page with "
                              "`-- --config PATH` or set DALIO_CONFIG")
        site = Site(config_path, max_age_hours=max_age, python="python")
        facts = site.status()
    except (BackupError, OSError) as exc:
        st.error(f"cannot read the backups' status: {exc}")
        st.stop()
    problems = facts["problems"]
    show_health(site, facts, problems)
    show_timeline(site, facts)
    show_points(site)
    show_copies(site, facts)
    show_checks(site, facts)
    show_restore(site, facts)


main()
