"""The SMART app in a real browser (Debian's Chromium driven by Playwright), through a full EHR launch:
hook call -> the card's `smart` link -> EHR launch (`iss` + `launch`) -> discovery from
{iss}/.well-known/smart-configuration -> authorize (PKCE S256) at oidc-provider -> token with `patient`
-> the page reads the real FHIR test server with the token and draws the chart.

Every request the browser makes to a host other than 127.0.0.1/localhost is aborted and counted (the page
must need nothing from the internet). Screenshots of every outcome go to tests/artifacts/smart/.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import select

from cds_service.app import create_app
from cds_service.gather.smart_oauth import SCOPES
from cds_service.record.db.schema import feedback
from cds_service.wire.runtime import Runtime, build_runtime
from tests.support.app_settings import test_settings
from tests.support.fhir_server import FhirServerProcess
from tests.support.fixtures import hook_request, load_scenario_bundle
from tests.support.smart_auth import (
    AXE_SCRIPT,
    SmartAuthServer,
    SmartAuthUnavailableError,
    running_smart_auth,
    serving,
)

pytestmark = [pytest.mark.fhir_server, pytest.mark.smart_browser]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "smart"
CLIENT_ID = "osteo-cds-smart-test"
SCENARIOS = {"ESCALATE": "s01", "CONSIDER": "s20", "SPECIALIST_REVIEW": "s25"}
# Shared scenario s01 (clinical scenario file): DXA 2021-02-15 and 2024-05-20 on one scanner.
S01_T_SCORES = {
    ("2021-02-15", "total hip", "-2.6"),
    ("2021-02-15", "femoral neck", "-2.7"),
    ("2021-02-15", "lumbar spine", "-2.9"),
    ("2024-05-20", "total hip", "-2.5"),
    ("2024-05-20", "femoral neck", "-2.6"),
    ("2024-05-20", "lumbar spine", "-2.7"),
}


@dataclass
class Stack:
    app_base: str
    fhir: FhirServerProcess
    auth: SmartAuthServer
    blocked: list[str]
    runtime: Runtime


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module")
def stack(fhir_server: FhirServerProcess) -> Iterator[Stack]:
    for scenario in SCENARIOS.values():
        fhir_server.load(load_scenario_bundle(scenario))
    with serving() as (app_base, mount):
        try:
            auth_cm = running_smart_auth(
                fhir_base=fhir_server.base_url,
                client_id=CLIENT_ID,
                redirect_uri=f"{app_base}/smart/callback",
                scopes=SCOPES,
            )
            auth = auth_cm.__enter__()
        except SmartAuthUnavailableError as error:
            if _ci():
                pytest.fail(f"SMART auth server unavailable in CI: {error}")
            pytest.skip(f"SMART auth server unavailable: {error}")
        try:
            settings = test_settings(
                {
                    "CDS_AS_OF": "2025-06-01",
                    "CDS_PUBLIC_BASE_URL": app_base,
                    "CDS_SMART_CLIENT_ID": CLIENT_ID,
                    "CDS_SMART_ISS_ALLOWLIST": fhir_server.base_url,
                    "CDS_SMART_AUTH_ORIGINS": auth.base_url,
                    "CDS_FHIR_DEADLINE_S": "20",
                    "CDS_FHIR_READ_TIMEOUT_S": "15",
                }
            )
            runtime = build_runtime(settings)
            mount(create_app(settings, runtime=runtime))
            response = requests.put(
                f"{fhir_server.base_url}/__smart-configuration",
                json=auth.smart_configuration(SCOPES),
                timeout=10,
            )
            response.raise_for_status()
            yield Stack(app_base, fhir_server, auth, [], runtime)
        finally:
            auth_cm.__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    if not CHROMIUM.exists():
        if _ci():
            pytest.fail("Chromium missing in CI: `make test` installs it (apt-get install chromium)")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    # bypass_csp: the page forbids every script; axe-core is injected by the test only.
    context = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)

    def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "about:")):
            route.continue_()
        else:
            stack.blocked.append(host)
            route.abort()

    context.route("**/*", only_loopback)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()
    assert stack.blocked == [], f"the page tried to reach non-loopback hosts: {stack.blocked}"


def _card_link(stack: Stack, scenario: str) -> tuple[str, dict[str, Any], str]:
    """Call the hook like the EHR does; returns (link url, link, patient id) of the outcome card."""
    body = hook_request(scenario, with_prefetch=False, fhir_server=stack.fhir.base_url)
    response = requests.post(f"{stack.app_base}/cds-services/{_service_id(stack)}", json=body, timeout=60)
    assert response.status_code == 200, response.text[:500]
    card = response.json()["cards"][0]
    links = [link for link in card.get("links", []) if link["type"] == "smart"]
    assert len(links) == 1
    return links[0]["url"], links[0], body["context"]["patientId"]


def _service_id(stack: Stack) -> str:
    services = requests.get(f"{stack.app_base}/cds-services", timeout=10).json()["services"]
    return str(services[0]["id"])


def _launch_url(link_url: str, iss: str, launch: str) -> str:
    return f"{link_url}?{urlencode({'iss': iss, 'launch': launch})}"


def _arrive(page: Any, url: Any) -> None:
    """Wait for the navigation to `url`; on a time-out, say where the browser is and what it shows."""
    try:
        page.wait_for_url(url, timeout=20_000)
    except Exception as error:
        text = page.locator("body").inner_text()[:600] if page.locator("body").count() else ""
        raise AssertionError(f"browser at {page.url[:120]} showing {text!r}") from error


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _t_score_rows(page: Any) -> set[tuple[str, str, str]]:
    rows = page.locator("#bmd-table tbody tr").all()
    found = set()
    for row in rows:
        cells = [cell.inner_text().strip() for cell in row.locator("td").all()]
        if cells[3] == "T-score":
            found.add((cells[0], cells[1], cells[4]))
    return found


@pytest.mark.parametrize("outcome", list(SCENARIOS))
def test_ehr_launch_renders_the_cards_decision_and_chart(page: Any, stack: Stack, outcome: str) -> None:
    scenario = SCENARIOS[outcome]
    link_url, link, patient = _card_link(stack, scenario)
    assert link_url == f"{stack.app_base}/smart/launch"
    assert '"patient"' in link["appContext"] and '"decision"' in link["appContext"]
    launch = stack.auth.new_launch(patient, link["appContext"])
    started = time.perf_counter()
    page.goto(_launch_url(link_url, stack.fhir.base_url, launch))
    _arrive(page, f"{stack.app_base}/smart/app")
    elapsed = time.perf_counter() - started
    heading = page.locator("h1").inner_text()
    expected = {
        "ESCALATE": "Escalation to sequential anabolic therapy: criteria met",
        "CONSIDER": "Escalation to sequential anabolic therapy: consider",
        "SPECIALIST_REVIEW": "Specialist review",
    }[outcome]
    assert heading == expected
    chart = page.locator("svg#chart-t-score")
    assert chart.get_attribute("role") == "img"
    assert (chart.locator("title").text_content() or "").startswith("T-scores per site")
    assert page.locator("svg#chart-timeline").count() == 1
    decision_id = re.search(r'"decision":"([^"]+)"', link["appContext"])
    assert decision_id is not None and decision_id.group(1) in page.locator(".meta").inner_text()
    if scenario == "s01":
        assert _t_score_rows(page) == S01_T_SCORES
        for site, count in (("total_hip", 2), ("femoral_neck", 2), ("lumbar_spine", 2)):
            markers = page.locator(f"svg#chart-t-score g#series-t_score-{site} use")
            assert markers.count() == count
        assert page.locator("svg#chart-t-score g[id^='target-t_score-']").count() == 2
    if scenario == "s25":
        assert page.locator("svg#chart-t-score g[id^='scanner-change-']").count() >= 1
    _shot(page, f"app-{outcome.lower()}")
    print(f"{outcome}: launch to rendered page {elapsed:.2f} s")


def test_override_reason_is_sent_as_feedback(page: Any, stack: Stack) -> None:
    link_url, link, patient = _card_link(stack, "s01")
    page.goto(_launch_url(link_url, stack.fhir.base_url, stack.auth.new_launch(patient, link["appContext"])))
    _arrive(page, f"{stack.app_base}/smart/app")
    page.get_by_label("Patient refuses/declines (no context given)").check()
    page.get_by_role("button", name="Send override reason").click()
    _arrive(page, f"{stack.app_base}/smart/app?feedback=sent")
    assert "override reason was recorded" in page.get_by_role("status").inner_text()
    decision_id = re.search(r'"decision":"([^"]+)"', link["appContext"])
    assert decision_id is not None
    with stack.runtime.engine.connect() as connection:
        rows = connection.execute(
            select(feedback.c.outcome, feedback.c.reason_code, feedback.c.matched).where(
                feedback.c.card == decision_id.group(1)
            )
        ).all()
    assert [tuple(row) for row in rows] == [("overridden", "patient-refuses", True)]
    _shot(page, "feedback-sent")


def test_page_has_no_serious_accessibility_violations(page: Any, stack: Stack) -> None:
    link_url, link, patient = _card_link(stack, "s01")
    page.goto(_launch_url(link_url, stack.fhir.base_url, stack.auth.new_launch(patient, link["appContext"])))
    _arrive(page, f"{stack.app_base}/smart/app")
    page.add_script_tag(path=str(AXE_SCRIPT))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    serious = [
        f"{violation['id']}: {violation['help']}"
        for violation in result["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
    assert serious == []
    assert result["testEngine"]["name"] == "axe-core"
    # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    # Print: the form and the banner are not printed, the charts and tables are.
    page.emulate_media(media="print")
    assert page.locator("section.feedback").is_hidden()
    assert page.locator("svg#chart-t-score").is_visible() and page.locator("#bmd-table").is_visible()
    page.pdf(path=str(ARTIFACTS / "app-escalate-print.pdf"))


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_a_code_bound_to_another_verifier_is_refused(page: Any, stack: Stack) -> None:
    """Authorization-code injection: the code was issued for someone else's PKCE challenge."""
    link_url, link, patient = _card_link(stack, "s01")

    def swap_challenge(route: Any) -> None:
        # The app's redirect to the authorize endpoint, with the challenge of another verifier.
        response = route.fetch(max_redirects=0)
        parts = urlsplit(response.headers["location"])
        query = dict(parse_qsl(parts.query))
        query["code_challenge"] = _challenge("an-attacker-verifier-" + "x" * 40)
        headers = {**response.headers, "location": urlunsplit(parts._replace(query=urlencode(query)))}
        route.fulfill(response=response, headers=headers)

    page.route(f"{stack.app_base}/smart/launch**", swap_challenge)
    page.goto(_launch_url(link_url, stack.fhir.base_url, stack.auth.new_launch(patient, link["appContext"])))
    _arrive(page, re.compile(r".*/smart/callback.*"))
    assert page.locator("h1").inner_text() == "The EHR refused to authorize this app"
    assert "invalid_grant" in page.locator("main").inner_text()
    assert page.locator("svg").count() == 0
    _shot(page, "refused-wrong-verifier")


def test_an_expired_access_token_is_refused(page: Any, stack: Stack) -> None:
    link_url, link, patient = _card_link(stack, "s01")
    launch = stack.auth.new_launch(patient, link["appContext"], access_token_ttl=2)
    page.goto(_launch_url(link_url, stack.fhir.base_url, launch))
    _arrive(page, f"{stack.app_base}/smart/app")
    time.sleep(2.5)
    response = page.reload()
    assert response is not None and response.status == 401
    assert page.locator("h1").inner_text() == "Your access has expired"
    assert page.locator("svg").count() == 0
    _shot(page, "refused-expired-token")


def test_a_patient_other_than_the_cards_is_refused(page: Any, stack: Stack) -> None:
    link_url, link, _patient = _card_link(stack, "s01")
    other = next(
        r["resource"]["id"]
        for r in load_scenario_bundle("s20")["entry"]
        if r["resource"]["resourceType"] == "Patient"
    )
    page.goto(_launch_url(link_url, stack.fhir.base_url, stack.auth.new_launch(other, link["appContext"])))
    _arrive(page, re.compile(r".*/smart/callback.*"))
    assert page.locator("h1").inner_text() == "This is not the card's patient"
    assert page.locator("svg").count() == 0
    _shot(page, "refused-other-patient")
    # The refusal ends the session: the app page has nothing to show.
    page.goto(f"{stack.app_base}/smart/app")
    assert page.locator("h1").inner_text() == "No active session"


def test_an_iss_not_on_the_allowlist_is_refused_before_any_request(page: Any, stack: Stack) -> None:
    response = page.goto(f"{stack.app_base}/smart/launch?iss=http://127.0.0.1:9/fhir&launch=abc")
    assert response is not None and response.status == 403
    assert page.locator("h1").inner_text() == "This FHIR server is not allowed"
    _shot(page, "refused-iss-not-allowed")
