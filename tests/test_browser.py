"""The Backups page in a real browser: `streamlit run` on 127.0.0.1, headless Chromium
driven by Selenium (Debian's chromium and chromium-driver, which .ci/run installs),
the health lines and the timeline chart rendered, and a screenshot of the page; and
the page served beyond localhost (on every interface, or through what a reverse proxy
sends) showing why it will not restore, with no Restore button.

Skipped, saying why, only when no Chromium or chromedriver is installed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from backup_manager import BackupManager
from tests.helpers import ROOT

PAGE = ROOT / "dashboard" / "backups.py"
STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")
# Each point the chart drew (Vega's SVG renderer): its copy, from its accessible
# label, and its fill colour.
POINTS = """
return Array.from(document.querySelectorAll('.vega-embed svg g.mark-symbol.role-mark path'))
  .map(p => [(/copy: (\\w+)/.exec(p.getAttribute('aria-label') || '') || [])[1],
             p.getAttribute('fill')]);
"""


@pytest.fixture
def chrome():
    """(chromium, chromedriver) paths, or skip saying what is missing."""
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                    "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("no browser installed: needs Chromium and chromedriver on PATH "
                    "(apt-get install chromium chromium-driver; .ci/run does it)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    return chromium, driver


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site(home, endpoint, bucket):
    """Ten days of a DalioLite site: daily status backups, two rebalances, every backup
    copied to a mirror folder and to S3; then a paper account changed by hand and not
    backed up (a PROBLEM, so the page shows a red line next to the green ones)."""
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(mirror_dirs=["mirror"], cloud_enabled=True, s3_bucket=bucket,
                         s3_endpoint_url=endpoint, s3_region="us-east-1")
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    (home / "mirror").mkdir()
    state = home / "state"
    state.mkdir()
    start = datetime.now(UTC) - timedelta(days=10, hours=6)
    for day in range(11):
        when = start + timedelta(days=day, hours=3)
        bm = BackupManager.from_config(home / "config.yaml", clock=lambda when=when: when)
        docs = {"autopilot_status.json": {"last_run": when.isoformat(), "outcome": "no_action"}}
        if day in (0, 7):
            docs["last_rebalance.json"] = {"timestamp": when.isoformat()}
            docs["paper_account.json"] = {"cash": 120.5 + day,
                                          "positions": {"VTI": 160.0, "TLT": 333.0}}
        for name, content in docs.items():
            (state / name).write_text(json.dumps(content))
            bm.backup_state_file(state / name)
        if day == 0:
            first_rebalance = (state / "last_rebalance.json").read_bytes()
    # Amber: rolled back to the first rebalance on purpose (the next run records it).
    (state / "last_rebalance.json").write_bytes(first_rebalance)
    # Red: changed by hand and not backed up.
    (state / "paper_account.json").write_text(json.dumps({"cash": 0.0, "positions": {}}))
    return home / "config.yaml"


def copies_of_each_backup(home, bucket):
    """How many backups the backups folder, the mirror and the bucket hold."""
    import boto3

    endpoint, name = bucket
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name).get("Contents", [])]
    return Counter({
        "local": sum(len(BackupManager(home / "backups").list_backups(n)) for n in STATE_FILES),
        "mirror": sum(len(BackupManager(home / "mirror").list_backups(n)) for n in STATE_FILES),
        "cloud": sum(not k.endswith(".sha256") and "/point-" not in k for k in keys)})


@contextmanager
def streamlit(folder, config, address):
    """`streamlit run dashboard/backups.py -- --config CONFIG` on a free port, bound to
    `address` (None: no --server.address, so every interface, streamlit's default);
    yields the port."""
    port = free_port()
    bind = ["--server.address", address] if address else []
    log = open(folder / "streamlit.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(PAGE), "--server.headless", "true",
         *bind, "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
         "--", "--config", str(config)],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    health = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(health, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("streamlit did not start: "
                                + (folder / "streamlit.log").read_text(errors="replace"))
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def browser(chrome, *arguments):
    """Headless Chromium under chromedriver, with extra command-line `arguments`."""
    chromium, chromedriver = chrome
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,2400", *arguments):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(chrome, tmp_path, bucket):
    """The ten-day site, served on a free 127.0.0.1 port; yields its URL."""
    with streamlit(tmp_path, site(tmp_path, *bucket), "127.0.0.1") as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.mark.timeout(90)
def test_page_renders_health_lines_and_chart_in_chromium(chrome, served, tmp_path, bucket):
    expected_points = copies_of_each_backup(tmp_path, bucket)
    assert expected_points["local"] == 15 and len(set(expected_points.values())) == 1
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with browser(chrome) as driver:
        driver.get(served)
        wait = WebDriverWait(driver, 45, poll_frequency=0.25)

        def health_lines(d):
            texts = [e.text for e in d.find_elements(By.CSS_SELECTOR,
                                                     '[data-testid="stAlert"]')]
            lines = {n: t for n in STATE_FILES for t in texts if f"{n}:" in t}
            return lines if len(lines) == len(STATE_FILES) else False

        lines = wait.until(health_lines)
        assert "autopilot_status.json: OK" in lines["autopilot_status.json"]
        assert "holds the bytes of last_rebalance_" in lines["last_rebalance.json"]
        assert "holds bytes no backup holds" in lines["paper_account.json"]
        assert "Fix:" in lines["paper_account.json"]

        def chart(d):
            drawn = d.find_elements(By.CSS_SELECTOR, ".vega-embed canvas, .vega-embed svg")
            return next((e for e in drawn if e.size["width"] > 200 and e.size["height"] > 50),
                        False)

        drawn = wait.until(chart)
        assert drawn.is_displayed()
        points = wait.until(lambda d: d.execute_script(POINTS) or False)
        drawn_copies = Counter(copy for copy, _ in points)
        assert drawn_copies == expected_points, "one point per copy of each backup"
        fills = {copy: {fill for c, fill in points if c == copy} for copy in drawn_copies}
        assert all(len(f) == 1 for f in fills.values()), fills
        assert len({f.pop() for f in fills.values()}) == 3, "local, mirror, cloud: 3 colours"
        wait.until(lambda d: "Type last_rebalance.json to confirm" in
                   d.find_element(By.TAG_NAME, "body").text)
        time.sleep(1.0)  # let the chart's fade-in finish before the picture
        shot = tmp_path / "backups-page.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"screenshot: {shot}")


# A proxy's name for this machine, resolved by the browser alone (--host-resolver-rules),
# so the page is asked for by a name other than localhost as behind a reverse proxy.
PROXY_NAME = "dalio.example"
BEYOND = {  # how the page is served: (server.address, name asked for, headers, why shown)
    "on every interface": (None, "127.0.0.1", {},
                           "the server listens on every network interface"),
    "under a proxy's name": ("127.0.0.1", PROXY_NAME, {},
                             f"the page was asked for as {PROXY_NAME}:"),
    "with a proxy's forwarding header": ("127.0.0.1", "127.0.0.1",
                                         {"X-Forwarded-For": "203.0.113.9"},
                                         "the request came through a proxy (it carries "
                                         "X-Forwarded-For)"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(BEYOND))
def test_page_served_beyond_localhost_refuses_to_restore(chrome, tmp_path, case):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from dalio_lite import DalioLite

    address, name, headers, why = BEYOND[case]
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    DalioLite(tmp_path / "config.yaml").run_daily_check()
    live = tmp_path / "state" / "last_rebalance.json"
    live.unlink()  # what the page would restore
    with streamlit(tmp_path, tmp_path / "config.yaml", address) as port, \
            browser(chrome, f"--host-resolver-rules=MAP {PROXY_NAME} 127.0.0.1") as driver:
        if headers:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})
        driver.get(f"http://{name}:{port}/")
        wait = WebDriverWait(driver, 45, poll_frequency=0.25)

        def restore_panel(d):  # shown whole: refused, or asking for confirmation
            text = d.find_element(By.TAG_NAME, "body").text
            return text if "Installs" in text and (
                "Restore is off on this page" in text or "to confirm" in text) else False

        body = wait.until(restore_panel)
        assert "Restore is off on this page: " + why in body, body
        assert "to confirm" not in body and not [
            b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Restore"]
    assert not live.exists()
