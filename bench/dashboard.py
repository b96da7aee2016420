"""The dashboard's overview: how long the server takes to build it for N stacks.

    python bench/dashboard.py [--stacks 1000 2000] [--runs 30] [--browser]

A journal state of N stacks (each created once; one in a hundred failed) is folded in memory;
the overview page is then asked of the dashboard `--runs` times, as the listener asks it (routing,
access, the page built from the state, rendered and encoded). Prints the median and the 95th
percentile per size, and the page's size; writes bench/results/dashboard.json. The target: under
0.5 s for 1,000 stacks. (How fast a pushed change shows on an open page is measured by the
browser test, tests/e2e/test_dashboard.py, which prints it.)

With `--browser`, each size is also served by syncd's HTTP listener and opened in Debian's
headless Chromium (Selenium) `--runs` times: the time to a page the reader can use
(DOMContentLoaded) and to its load, and, with the page open, the time from the journal moving to
the new rows in place (the live script's poll, fetch and swap).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from syncd.core.config import HttpConfig, RepoConfig  # noqa: E402
from syncd.core.journal_state import Kind, Record, fold  # noqa: E402
from syncd.web.dashboard import Dashboard  # noqa: E402

RESULTS = BENCH_DIR / "results" / "dashboard.json"


def app_of(stacks: int) -> Any:
    records: list[Record] = []
    for n in range(stacks):
        stack = f"team-{n % 10}-service-{n:05d}"
        seq = len(records)
        data = {"repo": f"repo-{n % 10}", "stack": stack, "version": 1, "commit": f"{n:040x}"}
        records.append(
            Record(
                seq + 1,
                "2026-12-02T10:00:00.000Z",
                Kind.VERSION,
                {**data, "digest": "d", "action": "create"},
            )
        )
        result = (
            {"stack": stack, "result": "failed", "message": "Resource handler returned: no"}
            if n % 100 == 0
            else {"stack": stack, "result": "succeeded", "stack_status": "CREATE_COMPLETE"}
        )
        records.append(Record(seq + 2, "2026-12-02T10:00:01.000Z", Kind.RESULT, result))
    state = fold(records)
    journal = SimpleNamespace(state=state, records=lambda: records, directory=Path("/none"))
    config = SimpleNamespace(
        repos=[RepoConfig(name=f"repo-{i}", url="/none") for i in range(10)],
        backup=SimpleNamespace(url=None),
        state_dir=Path("/none"),
        http=HttpConfig(),
    )
    return SimpleNamespace(
        journal=journal, config=config, mirror=None, outboxes=[], syncs={}, cfn="none"
    )


def in_browser(app: Any, dashboard: Dashboard, runs: int) -> dict[str, float]:
    """Medians, in seconds: DOMContentLoaded, load, and a live update of the open page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from syncd.http import Endpoints, HttpServer
    from syncd.metrics import Metrics

    endpoints = Endpoints(
        Metrics(lambda: None), hooks=dict, ready=lambda: True, dashboard=dashboard
    )
    server = HttpServer("127.0.0.1:0", endpoints)
    server.start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    timing = (
        "const t = performance.getEntriesByType('navigation')[0];"
        "return [t.domContentLoadedEventEnd, t.loadEventEnd];"
    )
    ready, loaded, live = [], [], []
    try:
        url = f"http://{server.address}/"
        for _ in range(runs):
            driver.get(url)
            dcl, load = driver.execute_script(timing)
            ready.append(dcl / 1000)
            loaded.append(load / 1000)
        for _ in range(min(runs, 10)):
            seq = app.journal.state.last_seq
            start = time.perf_counter()
            app.journal.state.last_seq = seq + 1  # the journal moves: the page follows
            while driver.execute_script(
                "return document.getElementById('main').dataset.seq"
            ) != str(seq + 1):
                if time.perf_counter() - start > 30:
                    raise SystemExit("the open page did not follow the journal")
                time.sleep(0.01)
            live.append(time.perf_counter() - start)
    finally:
        driver.quit()
        server.stop()
    figures = {
        "dom_content_loaded": statistics.median(ready),
        "load": statistics.median(loaded),
        "live_update": statistics.median(live),
    }
    print(
        f"  in Chromium: usable after {figures['dom_content_loaded'] * 1000:.0f} ms, loaded after "
        f"{figures['load'] * 1000:.0f} ms; a live update in place after "
        f"{figures['live_update'] * 1000:.0f} ms (the poll is every second)",
        flush=True,
    )
    return figures


def always(app: Any) -> Any:
    """What the dashboard calls for the app: this one, each time."""
    return lambda: app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--browser", action="store_true", help="also open it in Chromium")
    args = parser.parse_args()
    out: dict[str, dict[str, Any]] = {}
    for stacks in args.stacks:
        app = app_of(stacks)
        dashboard = Dashboard(always(app))
        dashboard.answer("/", None)  # templates compiled once, as in a running daemon
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            answer = dashboard.answer("/", None)
            times.append(time.perf_counter() - start)
        assert answer.code == 200
        times.sort()
        median = statistics.median(times)
        p95 = times[int(0.95 * (len(times) - 1))]
        out[str(stacks)] = {"median": median, "p95": p95, "bytes": len(answer.body)}
        print(
            f"overview of {stacks} stacks: median {median * 1000:.0f} ms, 95th {p95 * 1000:.0f} ms,"
            f" {len(answer.body) / 1024:.0f} KiB",
            flush=True,
        )
        if args.browser:
            out[str(stacks)]["browser"] = in_browser(app, dashboard, args.runs)
    RESULTS.write_text(json.dumps({"runs": args.runs, "sizes": out}, indent=1))
    return 0 if out.get("1000", {"median": 0})["median"] < 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
