#!/usr/bin/env python3
"""Checks a campaign's HTML report the way a person sees it: rendered by
headless Chromium (Debian's `chromium` and `chromium-driver`, driven with
selenium from PyPI), offline, from a file:// URL.

  check_report.py --html report.html --report report.jsonl [--hostile FILE]
                  [--screenshot out.png]

Checks, on the rendered page:
- the devices per outcome and per MDM action equal the counts in the JSONL
  report, and the device total equals its rows;
- each chart has data (a series with more than one point, no "no data");
- the browser logged no console error, and the page made no request but for
  itself (it must work offline and stand alone);
- with --hostile FILE (one hostile string per line, as JSON strings): each
  string that is a device id in the report appears on the page as inert text
  (in the rendered text, escaped), no <script> or <img> element exists, no
  script ran (a canary), and the page is no wider than the window (long
  strings wrap).
With --screenshot, saves a full-page PNG of the report.
Exit 0 when every check holds; 1 with the list of failures otherwise.
"""

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def load_report(path):
    outcomes, actions, ids = collections.Counter(), collections.Counter(), []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            outcomes[row["outcome"]] += 1
            actions[row["action"]] += 1
            ids.append(row.get("device_id") or "")
    return outcomes, actions, ids


def driver(width, height):
    opts = webdriver.ChromeOptions()
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    opts.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='fleetwake-chromium-')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=opts, service=service)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--html", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--hostile")
    ap.add_argument("--screenshot")
    a = ap.parse_args()
    failures = []
    outcomes, actions, ids = load_report(a.report)
    url = "file://" + os.path.abspath(a.html)
    d = driver(1280, 900)
    try:
        d.get(url)
        # Outcomes and actions as rendered.
        shown_outcomes = {
            r.get_attribute("data-outcome"): int(r.find_elements(By.TAG_NAME, "td")[1].text)
            for r in d.find_elements(By.CSS_SELECTOR, "#outcomes tr[data-outcome]")
        }
        shown_actions = {
            r.get_attribute("data-action"): int(r.find_elements(By.TAG_NAME, "td")[1].text)
            for r in d.find_elements(By.CSS_SELECTOR, "#actions tr[data-action]")
        }
        if shown_outcomes != dict(outcomes):
            failures.append(f"outcomes on the page {shown_outcomes} != report {dict(outcomes)}")
        if shown_actions != dict(actions):
            failures.append(f"actions on the page {shown_actions} != report {dict(actions)}")
        kpi = d.find_element(By.CSS_SELECTOR, '[data-kpi="devices"] b').text
        if int(kpi) != len(ids):
            failures.append(f"devices shown {kpi} != rows {len(ids)}")
        # Charts.
        figures = d.find_elements(By.TAG_NAME, "figure")
        if len(figures) < 2:
            failures.append(f"{len(figures)} charts, want 2")
        for fig in figures:
            title = fig.find_element(By.TAG_NAME, "figcaption").text
            series = fig.find_elements(By.CSS_SELECTOR, "polyline.series")
            points = [len((s.get_attribute("points") or "").split()) for s in series]
            if not series or min(points) < 1 or "no data" in fig.text:
                failures.append(f"chart {title!r} has no data ({points} points)")
        # The page stands alone: no console error, no request but itself.
        for entry in d.get_log("browser"):
            if entry.get("level") == "SEVERE":
                failures.append(f"console: {entry.get('message')}")
        requests = []
        for entry in d.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        # The browser's own pages (chrome://, the blank tab) are not the report's.
        others = [
            r
            for r in requests
            if r != url and r.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp", "file")
        ]
        if others:
            failures.append(f"requests left the page: {others[:5]}")
        # Hostile input is inert text.
        if a.hostile:
            with open(a.hostile, encoding="utf-8") as f:
                hostile = [json.loads(l) for l in f if l.strip()]
            for tag in ("script", "img", "iframe", "object"):
                n = len(d.find_elements(By.TAG_NAME, tag))
                if n:
                    failures.append(f"{n} <{tag}> elements on the page")
            if d.execute_script("return window.__fleetwake_pwned === undefined") is not True:
                failures.append("a script from the input ran")
            for det in d.find_elements(By.TAG_NAME, "details"):
                d.execute_script("arguments[0].open = true", det)
            page_text = d.find_element(By.TAG_NAME, "body").get_attribute("textContent")
            listed = {
                c.get_attribute("textContent")
                for c in d.find_elements(By.CSS_SELECTOR, "table.list td bdi")
            }
            for h in hostile:
                if h in ids and h not in listed and h[:200] not in page_text:
                    failures.append(f"hostile id not shown as text: {h[:60]!r}")
            width = d.execute_script("return document.documentElement.scrollWidth")
            inner = d.execute_script("return window.innerWidth")
            if width > inner:
                failures.append(f"the layout broke: page {width}px wide in a {inner}px window")
        if a.screenshot:
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(1280, min(max(height, 900), 6000))
            d.save_screenshot(a.screenshot)
    finally:
        d.quit()
    if failures:
        print("report check FAILED:")
        for f in failures:
            print(" -", f)
        sys.exit(1)
    print(
        f"report check OK: {len(ids)} devices, {len(outcomes)} outcomes, "
        f"{len(actions)} actions, charts with data, no console error, no request"
        + (", hostile input inert" if a.hostile else "")
    )


if __name__ == "__main__":
    main()
