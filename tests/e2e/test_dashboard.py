"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium with Debian's
chromedriver, against `syncd run` on a sample repo and moto's server. Screenshots are kept in
tests/artifacts/ (the README's are copies of them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import TOPIC_TEMPLATE, deployment, write_config
from tests.e2e.conftest import run_syncd, running_daemon, syncd_env, wait_for
from tests.e2e.test_daemon import NotifySocket
from tests.support.gitrepo import GitRepo, free_port
from tests.support.timing import PATIENCE

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser(width: int = 1280, height: int = 900, javascript: bool = True) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument("--lang=en-US")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(PATIENCE)
    return driver


def screenshot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight") or 900
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(int(height) + 120, 4000))
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


@pytest.fixture
def site(tmp_path: Path, repo: GitRepo, aws: Any) -> Iterator[dict[str, Any]]:
    repo.commit(
        {
            "templates/topic.yaml": TOPIC_TEMPLATE,
            "deployments/app.yaml": deployment(Name="v1"),
            "deployments/orders.yaml": deployment(Name="o1"),
        },
        message="the first two stacks",
    )
    port = free_port()
    entry = {
        "name": "r",
        "url": str(repo.bare),
        "poll_interval": "200ms",
        "watch": True,
        "stacks": {"orders": {"approval": "manual"}},
    }
    config = write_config(tmp_path, [entry], aws.endpoint, http={"listen": f"127.0.0.1:{port}"})
    with running_daemon("-c", str(config)) as daemon:
        wait_for(lambda: aws.stack("app"), what="the first create")
        wait_for(
            lambda: settled(run_syncd("status", "-c", str(config), "--format", "json").stdout),
            what="app in sync and orders awaiting approval",
        )
        yield {"url": f"http://127.0.0.1:{port}", "daemon": daemon, "config": config}


def settled(status_json: str) -> bool:
    states = {row["stack"]: row["state"] for row in json.loads(status_json or "[]")}
    return states == {"app": "in_sync", "orders": "awaiting_approval"}


# Read in one go by the page itself: the live script may swap the rows between two reads.
_ROWS = """
return Array.from(document.querySelectorAll("table.stacks tbody tr")).map((tr) => {
  const name = tr.querySelector("th a"), state = tr.querySelector("td .state");
  const cells = tr.querySelectorAll("td");
  return [name ? name.textContent : "", state ? state.textContent : "",
          cells.length > 1 ? cells[1].textContent : ""];
});
"""


def rows(driver: Any) -> dict[str, str]:
    """Each stack row of the overview: its name -> its state as written."""
    return {name: state for name, state, _ in driver.execute_script(_ROWS) if name}


def _version_of(driver: Any, stack: str) -> str | None:
    found = {name: version for name, _, version in driver.execute_script(_ROWS)}
    return found.get(stack)


def test_the_overview_a_stack_and_a_change_arriving_live(
    site: dict[str, Any], repo: GitRepo, aws: Any
) -> None:
    driver = browser()
    try:
        driver.get(site["url"] + "/")
        wait = WebDriverWait(driver, PATIENCE, poll_frequency=0.05)
        # Each state written out, not colour alone.
        wait.until(lambda d: rows(d) == {"app": "in sync", "orders": "awaiting approval"})
        wait.until(lambda d: d.find_element(By.ID, "live").text == "read-only · live")
        # Times in the reader's zone, the UTC value on hover.
        stamp = driver.find_element(By.CSS_SELECTOR, "table.stacks time")
        assert stamp.get_attribute("title").endswith("(UTC)")
        assert "UTC" not in stamp.text
        screenshot(driver, "overview")
        driver.set_window_size(1280, 900)

        # A push shows on the open page without a reload.
        marker = driver.execute_script("window.notReloaded = true; return 1")
        repo.commit({"deployments/app.yaml": deployment(Name="v2")}, message="app: v2")
        pushed = time.monotonic()
        wait.until(lambda d: _version_of(d, "app") == "2")
        seen = time.monotonic() - pushed
        assert marker == 1 and driver.execute_script("return window.notReloaded") is True
        print(f"a pushed change showed on the open page after {seen:.2f} s")
        # Version 2 shows from its start: the failure below is for version 3 only.
        wait.until(lambda d: _version_of(d, "app") == "2" and rows(d).get("app") == "in sync")

        # The waiting stack: its change set, prominently, and the command to run.
        driver.get(site["url"] + "/stacks/orders")
        waiting = driver.find_element(By.CSS_SELECTOR, "section.waiting")
        assert "syncd approve orders --change-set" in waiting.text
        assert "Add" in _main(driver)
        screenshot(driver, "awaiting-approval")
        driver.set_window_size(1280, 900)

        # A failed version, with its reason, its template diff and its events.
        aws.proxy.fail("app", reason="Resource handler returned message: quota exceeded")
        owned = TOPIC_TEMPLATE + "  Owner:\n    Value: team-app\n"  # an output more
        repo.commit(
            {
                "templates/app.yaml": owned,
                "deployments/app.yaml": deployment("templates/app.yaml", Name="v3"),
            },
            message="app: v3",
        )
        driver.get(site["url"] + "/stacks/app")
        wait.until(lambda d: "Version 3: update, failed" in _main(d))
        text = _main(driver)
        assert (
            "quota exceeded" in text and "Version 3: update, failed" in text and "app: v3" in text
        )  # the commit's subject
        driver.get(site["url"] + "/stacks/app")  # the events are read once the apply ended
        text = _main(driver)
        assert "Stack events of the apply" in text and "UPDATE_FAILED" in text
        assert re.search(r"Name\s+v2\s+v3\s+changed", text)  # the parameter, before and after
        assert "Template against version 2" in text and "the template is the same" not in text
        added = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".diff .add")]
        assert any("team-app" in line for line in added), added
        screenshot(driver, "failed-version")

        # The keyboard reaches every link of the page, in order, with a visible focus.
        driver.get(site["url"] + "/")
        wait.until(lambda d: d.find_element(By.ID, "live").text == "read-only · live")
        links = driver.execute_script(
            "return Array.from(document.querySelectorAll('a, button, select, input'))"
            ".filter((e) => e.offsetParent !== null).length"
        )
        reached = []
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        for _ in range(links):
            active = driver.switch_to.active_element
            outline = active.value_of_css_property("outline-style")
            reached.append((active.tag_name, active.text or active.get_attribute("name"), outline))
            active.send_keys(Keys.TAB)
        assert reached[0][1] == "syncd" and len({r[:2] for r in reached}) == links
        assert all(style not in ("none", "") for _, _, style in reached)

        # Working in the page holds the live update back, and keeps the focus where it is.
        link = driver.find_element(By.CSS_SELECTOR, "table.stacks th a")
        driver.execute_script("arguments[0].focus()", link)
        seq = driver.find_element(By.ID, "main").get_attribute("data-seq")
        repo.commit({"deployments/orders.yaml": deployment(Name="o2")}, message="orders: o2")
        wait.until(lambda d: "paused" in d.find_element(By.ID, "live").text)
        assert driver.find_element(By.ID, "main").get_attribute("data-seq") == seq
        assert driver.switch_to.active_element == link
        driver.execute_script("document.activeElement.blur()")
        wait.until(lambda d: d.find_element(By.ID, "main").get_attribute("data-seq") != seq)

        # Nothing the pages did broke their Content-Security-Policy: the one they are served
        # with, which the browser enforces (without it, nothing could be refused).
        with urllib.request.urlopen(site["url"] + "/", timeout=PATIENCE) as answer:
            policy = answer.headers.get_all("Content-Security-Policy") or []
        assert len(policy) == 1 and "script-src 'self';" in policy[0], policy
        assert "unsafe-inline" not in policy[0]
        refused = [e for e in driver.get_log("browser") if "Content Security Policy" in str(e)]
        assert refused == []
        # And this check sees a refusal: an inline script put in the page is refused, logged.
        inline = "const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        driver.execute_script(inline + "document.body.appendChild(s);")
        assert driver.execute_script("return window.ran") is None
        wait.until(lambda d: any("Content Security Policy" in str(e) for e in d.get_log("browser")))
    finally:
        driver.quit()


def _main(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('main').innerText"))


def test_without_javascript_and_on_a_phone(site: dict[str, Any]) -> None:
    plain = browser(javascript=False)
    try:
        plain.get(site["url"] + "/")
        assert "app" in rows(plain)
        stamp = plain.find_element(By.CSS_SELECTOR, "table.stacks time")
        assert stamp.text.endswith("UTC")  # no script: the UTC time itself
        assert "refresh" in plain.find_element(By.ID, "live").text
        plain.find_element(By.NAME, "name").send_keys("ord")
        before = plain.find_element(By.ID, "main")
        plain.find_element(By.CSS_SELECTOR, "form.filters button").click()
        # The click submits the form: wait for the new page before reading it.
        WebDriverWait(plain, PATIENCE).until(staleness_of(before))
        assert list(rows(plain)) == ["orders"]  # the filter works as a plain form
        plain.get(site["url"] + "/journal")
        text = _main(plain)
        assert re.search(r"verified \d+ records, hash chain intact", text)
        assert "change_set" in text and "result" in text  # the latest records, by kind
    finally:
        plain.quit()
    phone = browser(390, 844)
    try:
        phone.get(site["url"] + "/")
        WebDriverWait(phone, PATIENCE).until(lambda d: "app" in rows(d))
        width = phone.execute_script("return document.documentElement.scrollWidth")
        assert width <= phone.execute_script("return window.innerWidth") + 1
        screenshot(phone, "overview-phone")
    finally:
        phone.quit()


def status_of(url: str, token: str | None = None) -> int:
    """The status of a GET of `url`, with the bearer `token` if given."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_the_token_is_read_again_on_sighup_and_a_bad_one_keeps_the_old(
    tmp_path: Path, repo: GitRepo, aws: Any
) -> None:
    repo.commit({"README.md": "no stacks yet"})
    token = tmp_path / "token"
    token.write_text("first-token\n")
    port = free_port()
    entry = {"name": "r", "url": str(repo.bare), "poll_interval": "1h"}
    http = {"listen": f"127.0.0.1:{port}", "token_file": str(token)}
    config = write_config(tmp_path, [entry], aws.endpoint, http=http)
    notify = NotifySocket(tmp_path / "notify.sock")
    page = f"http://127.0.0.1:{port}/"

    def reload() -> None:
        daemon.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")

    try:
        env = syncd_env(NOTIFY_SOCKET=str(notify.path))
        with running_daemon("-c", str(config), env=env) as daemon:
            notify.wait_for("READY=1")
            assert status_of(page) == 401
            assert status_of(page, "first-token") == 200
            # A new token, and SIGHUP: only the new one opens the pages.
            token.write_text("second-token\n")
            reload()
            assert status_of(page, "second-token") == 200
            assert status_of(page, "first-token") == 401
            # An empty token file is refused: the pages stay closed, with the token they had.
            token.write_text("")
            reload()
            assert status_of(page) == 401
            assert status_of(page, "second-token") == 200
            assert daemon.poll() is None
    finally:
        notify.close()
    assert "config.reload_refused" in daemon.stderr_text
    assert "must hold one word" in daemon.stderr_text


def test_screenshots_directory_is_not_committed() -> None:
    ignored = (Path(__file__).resolve().parents[2] / ".gitignore").read_text()
    assert "tests/artifacts/" in ignored and os.sep == "/"
