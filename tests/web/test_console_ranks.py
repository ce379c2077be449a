"""The job page of a job with several workers: a rank picker switches the log to one rank's own log."""

from __future__ import annotations

import sys

from tests.jobs.test_workers_and_queues import SHOW_RANK
from tests.web.test_console import browser, chromium, console_server, shot, sign_in  # noqa: F401 (fixtures)


def test_the_rank_picker_shows_each_ranks_own_log(console_server, browser):  # noqa: F811
    srv = console_server
    with srv.http() as http:
        command = [sys.executable, "-c", SHOW_RANK]
        body = {"kind": "command", "name": "ranks", "command": command, "workers": 2}
        job = http.post("/api/v1/jobs", json=body).json()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, srv)
    page.goto(f"{srv.url}/#/jobs/{job['id']}")
    page.wait_for_selector(".badge.state-succeeded", timeout=60_000)
    log = "document.querySelector('pre.log').textContent"
    page.wait_for_function(f"() => {log}.includes('I am rank 0 of 2')", timeout=10_000)
    page.get_by_test_id("rank-picker").select_option("1")
    page.wait_for_function(f"() => {log} === 'I am rank 1 of 2\\n'", timeout=10_000)
    shot(page, "20-job-rank-log")
    page.get_by_test_id("rank-picker").select_option("")  # back to the main output
    page.wait_for_function(f"() => {log}.includes('I am rank 0 of 2')", timeout=10_000)
    assert not errors, errors
