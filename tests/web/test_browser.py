"""Browser tests in real headless Chromium against daphne + a q-cluster on the test database.

They sign in, build a workflow in the editor, run it and watch node statuses and LLM tokens arrive
over the WebSocket, cancel, rerun from a node, approve a waiting run and add a credential.
``GW_SCREENSHOTS=1`` also writes the screenshots of the key pages to ``docs/screenshots/``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection

from providers.collections import collection_create, document_add
from providers.credentials import credential_create
from runs import services as run_services
from runs.models import Run
from workflows import services as workflow_services

from .browser import CHROMIUM, CHROMIUM_ARGS, ROOT, Servers
from .test_run_pages import APPROVAL

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"
LIVE_TIMEOUT = 180_000  # ms; the first LLM call loads the local model in the worker


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: run `make browser`.")
    running = Servers(tmp_path_factory.mktemp("servers")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def chromium():
    # Playwright's sync API runs an event loop under the test; the ORM calls the tests make
    # between page actions are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, servers, user):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, base_url=servers.url)
    context.set_default_timeout(30_000)
    page = context.new_page()
    sign_in(page, user.username)
    yield page
    context.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    if os.environ.get("GW_SCREENSHOTS"):
        target = ROOT / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path


def off_loop(function, **kwargs):
    """Call ``function`` in a plain thread: Playwright keeps an event loop in this one, and the
    services push events to the channel layer with ``async_to_sync``, which refuses to run there."""

    def call():
        try:
            return function(**kwargs)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def sign_in(page, username: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/")
    assert page.locator("h1").first.inner_text() == "Dashboard"


def run_status(page) -> str:
    return page.locator("#run-status .badge").get_attribute("data-status")


def wait_for_run_status(page, status: str, timeout: int = LIVE_TIMEOUT) -> None:
    page.wait_for_selector(f'#run-status .badge[data-status="{status}"]', timeout=timeout)


def add_node(page, node_type: str, node_id: str, fields: dict[str, str]) -> None:
    page.select_option("#add_type", node_type)
    page.fill("#add_node_id", node_id)
    page.click("#add-node button[type=submit]")
    page.wait_for_selector("h1:has-text('New')")
    for selector, value in fields.items():
        page.fill(selector, value)
    page.click("main form button.btn-primary")
    page.wait_for_selector(f'.diagram .node[data-node="{node_id}"]')


def test_sign_in_build_run_and_watch_it_live(page, loopback, shots):
    page.goto("/workflows/new/")
    page.fill("#id_name", "Lighthouse writer")
    page.fill("#id_tags", "demo, browser")
    page.click("text=Create workflow")
    page.wait_for_selector("text=No nodes yet")

    add_node(page, "http_request", "fetch", {"#id_cfg_url": f"{loopback.url}/slow?seconds=2"})
    add_node(
        page,
        "llm_call",
        "write",
        {"#id_cfg_prompt": "Write one sentence about {{ nodes.fetch.output.json.topic }}.", "#id_cfg_max_tokens": "24"},
    )
    page.select_option("#edge_source", "fetch")
    page.select_option("#edge_target", "write")
    page.click("#connect button[type=submit]")
    page.wait_for_selector('.diagram .edge[data-source="fetch"][data-target="write"]', state="attached")
    page.click("text=Validate")
    page.wait_for_selector("#validation-state:has-text('Valid')")
    page.screenshot(path=str(shots / "workflow-editor.png"), full_page=True)

    page.click("#run button[type=submit]")
    page.wait_for_url("**/runs/*/")
    # The socket connects while the first node still waits on the slow loopback server.
    page.wait_for_function("window.gwRun && window.gwRun.mode === 'ws'")
    page.wait_for_selector('.diagram .node[data-node="fetch"].st-running', timeout=LIVE_TIMEOUT, state="attached")
    page.wait_for_selector('.diagram .node[data-node="fetch"].st-succeeded', timeout=LIVE_TIMEOUT, state="attached")
    page.wait_for_function("window.gwRun.tokens > 0", timeout=LIVE_TIMEOUT)
    streamed = page.locator("#tokens-write").text_content()
    assert streamed.strip(), "tokens arrive in the node's panel while the model generates"
    wait_for_run_status(page, "succeeded")
    page.wait_for_selector("body[data-run-final]")
    assert page.locator('.diagram .node[data-node="write"]').get_attribute("class").endswith("st-succeeded")
    assert page.locator("#timeline li").count() >= 6
    assert page.evaluate("window.gwRun.received") > 0
    run = Run.objects.get(workflow__name="Lighthouse writer")
    assert run.status == "succeeded"
    text = run.node_runs.get(node_id="write").output["text"]
    assert text.strip().startswith(streamed.strip())
    assert page.locator("#progress-done").inner_text() == "2"
    page.screenshot(path=str(shots / "run-live.png"), full_page=True)

    # Reloading the finished run loses nothing: the tokens and statuses are rendered from the database.
    page.reload()
    assert page.locator("#tokens-write").text_content().strip() == text.strip()
    assert run_status(page) == "succeeded"


def test_cancel_a_running_run(page, workspace, user, loopback):
    definition = {
        "format": "graphwright/v1",
        "name": "Slow one",
        "nodes": [{"id": "wait", "type": "http_request", "config": {"url": f"{loopback.url}/slow?seconds=20"}}],
        "edges": [],
    }
    workflow = workflow_services.workflow_create(workspace=workspace, user=user, name="Slow one", definition=definition)
    page.goto(f"/workflows/{workflow.pk}/")
    page.click("#run button[type=submit]")
    page.wait_for_url("**/runs/*/")
    page.wait_for_selector('.diagram .node[data-node="wait"].st-running', timeout=LIVE_TIMEOUT, state="attached")
    page.click("#cancel-form button")
    wait_for_run_status(page, "cancelled", timeout=30_000)
    run = Run.objects.get(workflow=workflow)
    assert run.status == "cancelled"
    assert page.locator("#cancel-form").count() == 0


def test_rerun_from_a_node(page, workflow, user):
    first = off_loop(run_services.run_start, workflow=workflow, user=user, inputs={"topic": "rerun"}, mode="sync")
    page.goto(f"/runs/{first.pk}/")
    assert run_status(page) == "succeeded"
    page.select_option("#rerun-from", "shout")
    page.click("#rerun-form button")
    page.wait_for_url(lambda url: url.rstrip("/").split("/")[-1] not in {str(first.pk), ""})
    wait_for_run_status(page, "succeeded")
    rerun = Run.objects.get(rerun_of=first)
    assert rerun.rerun_from == "shout"
    assert rerun.node_runs.get(node_id="greet").reused_from_id is not None
    page.reload()
    assert "reused from the earlier run" in page.locator("#panel-greet").text_content()
    assert "HELLO RERUN" in page.locator("#panel-shout").text_content()


def test_approve_a_waiting_run(page, workspace, user):
    workflow = workflow_services.workflow_create(
        workspace=workspace, user=user, name="Needs a yes", definition=APPROVAL
    )
    run = off_loop(run_services.run_start, workflow=workflow, user=user, inputs={})
    page.goto(f"/runs/{run.pk}/")
    approve = page.locator('button[value="approve"]')
    approve.wait_for(timeout=LIVE_TIMEOUT)
    assert run_status(page) == "waiting"
    page.fill("#comment-ask", "Looks good")
    approve.click()
    wait_for_run_status(page, "succeeded")
    page.wait_for_selector('.diagram .node[data-node="yes"].st-succeeded', state="attached")
    assert "st-skipped" in page.locator('.diagram .node[data-node="no"]').get_attribute("class")
    ask = Run.objects.get(pk=run.pk).node_runs.get(node_id="ask")
    assert ask.output["decision"] == "approved" and ask.output["data"] == {"comment": "Looks good"}


def test_add_a_credential_and_see_only_its_mask(page, loopback):
    secret = "tok-live-0123456789-SECRET-abcd"
    page.goto("/credentials/")
    page.click('.page-head a[href="/credentials/new/"]')
    page.fill("#id_name", "Partner API")
    page.select_option("#id_kind", "http_bearer")
    page.fill("#id_secret", secret)
    page.fill("#id_base_url", f"{loopback.url}/ok")
    page.click("main button.btn-primary")
    page.wait_for_selector("text=Partner API")
    card = page.locator("[data-credential]").filter(has_text="Partner API")
    mask = card.locator(".mask").inner_text()
    assert mask and mask != secret and "…" in mask
    assert secret not in page.content()
    card.locator("button:has-text('Test')").click()
    page.wait_for_selector("text=works: HTTP 200")
    assert loopback.seen[-1] == f"Bearer {secret}"
    page.goto(page.locator('[data-credential] a:has-text("Edit")').first.get_attribute("href"))
    assert page.locator("#id_secret").input_value() == ""
    assert secret not in page.content()


def test_key_pages_look_right_on_desktop_and_phone(chromium, servers, workflow, workspace, user, shots):
    """Screenshots of the key pages, and no sideways scrolling at 375 px."""
    off_loop(run_services.run_start, workflow=workflow, user=user, inputs={"topic": "world"}, mode="sync")
    off_loop(run_services.run_start, workflow=workflow, user=user, inputs={"topic": "again"}, mode="sync")
    off_loop(
        workflow_services.workflow_create, workspace=workspace, user=user, name="Approval flow", definition=APPROVAL
    )
    off_loop(
        credential_create,
        workspace=workspace,
        user=user,
        name="OpenAI (team)",
        kind="llm",
        provider="openai",
        secret="sk-" + "x" * 40,
    )
    collection = collection_create(workspace=workspace, user=user, name="Handbook", description="Policies and how-tos")
    document_add(
        collection=collection, user=user, title="Refunds", text="Customers may return items within thirty days."
    )
    last = Run.objects.filter(workflow=workflow).order_by("-id").first()
    pages = {
        "dashboard": "/",
        "workflows": "/workflows/",
        "gallery": "/workflows/gallery/",
        "workflow": f"/workflows/{workflow.pk}/",
        "run": f"/runs/{last.pk}/",
        "runs": "/runs/",
        "credentials": "/credentials/",
        "collection": f"/collections/{collection.pk}/?query=refund&top_k=3",
        "tokens": "/accounts/tokens/",
        "workspaces": "/accounts/workspaces/",
    }
    for width, suffix in ((1280, ""), (375, "-mobile")):
        context = chromium.new_context(viewport={"width": width, "height": 860}, base_url=servers.url)
        page = context.new_page()
        page.goto("/accounts/login/")
        page.screenshot(path=str(shots / f"sign-in{suffix}.png"))
        sign_in(page, user.username)
        for name, path in pages.items():
            response = page.goto(path, timeout=LIVE_TIMEOUT)  # the first search loads the embedding model
            assert response.status == 200, path
            page.wait_for_load_state("networkidle")
            if width == 375:
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{path} scrolls sideways by {overflow}px at 375 px"
            if not suffix or name in {"dashboard", "run", "workflow"}:
                page.screenshot(path=str(shots / f"{name}{suffix}.png"), full_page=True)
        # Keyboard: Tab from the top of a page reaches the skip link first.
        page.goto("/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip-link"
        missing = page.goto("/workflows/999999/")
        assert missing.status == 404 and "We could not find that page" in page.content()
        if not suffix:
            page.screenshot(path=str(shots / "not-found.png"))
        context.close()
