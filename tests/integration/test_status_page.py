"""Issue 13: the live status page in a real browser (Debian's headless Chromium) on a real stack: the agent, a real
Envoy, two reference model servers. The page shows the split and the rules, survives hostile text, and shows a
rollback while it happens (a screenshot is taken at that moment and saved in the test's tmp dir)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from harness.load import TrafficGenerator
from harness.wait import async_wait_until
from tests.integration.agent_stack import ROOT, TOKEN, AgentStack, body_factory
from tests.integration.conftest import unavailable
from tests.integration.headless_chromium import HeadlessChromium, chromium_binary

CONFIG = {
    "rules": {"file": str(ROOT / "rules" / "default.yaml")},
    # Long enough to see (and photograph) the verification window counting down.
    "rollback": {"verify_window_s": 8, "cooldown_s": 0},
}
MARKUP = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'

VERSIONS_JS = """[...document.querySelectorAll('#versions tbody tr')].map(
    r => [r.dataset.version, r.querySelector('.desired').textContent, r.querySelector('.served').textContent])"""
RULES_JS = """[...document.querySelectorAll('#rules tbody tr')].map(r => ({
    rule: r.dataset.rule, version: r.dataset.version, state: r.querySelector('.state').textContent,
    value: r.querySelector('.value').textContent, threshold: r.querySelector('.threshold').textContent}))"""
ROLLBACK_JS = """(() => { const card = document.getElementById('rollback'); return card.hidden ? null : {
    title: document.getElementById('rollback-title').textContent, done: card.dataset.done,
    outcome: card.dataset.outcome, text: card.textContent,
    phases: [...card.querySelectorAll('.phase')].map(
        p => [p.dataset.phase, p.querySelector('.phase-outcome').textContent]),
    countdown: (card.querySelector('.countdown') || {}).textContent || ''}; })()"""


@pytest.fixture
async def browser(tmp_path: Path, tmp_logs: Path):
    binary = chromium_binary()
    if binary is None:
        unavailable("chromium is missing (Debian package `chromium`; scripts/install-system-deps.sh)")
    assert binary is not None
    chromium = HeadlessChromium(binary, tmp_path / "chromium", tmp_logs)
    try:
        yield await chromium.start()
    finally:
        await chromium.close()
    assert not chromium.process.alive


@pytest.fixture
def stack(tmp_path, agent_factory, envoy_factory, refserver_factory) -> AgentStack:
    s = AgentStack(tmp_path, agent_factory, envoy_factory, refserver_factory, extra_config=CONFIG)
    s.start_upstreams()
    s.start_agent()
    s.start_envoy()
    return s


async def page_value(browser: HeadlessChromium, expression: str, want: Any, what: str, timeout_s: float = 20) -> Any:
    """Polls the page until `expression` evaluates to something `want` accepts (a value, or a predicate)."""
    seen: list[Any] = []

    async def check() -> Any:
        value = await browser.evaluate(expression)
        seen[:] = [value]
        ok = want(value) if callable(want) else value == want
        return value if ok else None

    try:
        return await async_wait_until(check, timeout_s, interval_s=0.1, what=what)
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(f"{what}: last seen {json.dumps(seen[-1:])[:2000]}") from exc


async def test_status_page_shows_the_split_the_rules_and_a_rollback_as_it_happens(stack, browser, tmp_path):
    await stack.wait_ready_async()
    status, body = await stack.control(
        "POST", "/v1/traffic", {"weights": [{"version": "v1", "weight": 50}, {"version": "v2", "weight": 50}],
                                "reason": MARKUP})  # fmt: skip
    assert status == 200, body

    await browser.navigate(f"{stack.control_url}/status")
    assert await browser.evaluate("document.getElementById('page').hidden"), "no data without a token"
    await browser.evaluate(
        "document.getElementById('token').value = 'not-the-token'; "
        "document.getElementById('login-form').requestSubmit()"
    )
    await page_value(
        browser, "document.getElementById('login-error').textContent", lambda t: "refused" in t, "a wrong token refused"
    )
    await browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(TOKEN)}; "
        "document.getElementById('login-form').requestSubmit()"
    )
    await page_value(browser, VERSIONS_JS, [["v1", "50", "50"], ["v2", "50", "50"]], "the page shows the 50/50 split")
    assert await browser.evaluate("sessionStorage.getItem('rollback-agent-token')") == TOKEN

    # Hostile text from the audit trail is shown as text: nothing it contains runs or becomes an element.
    await page_value(
        browser,
        "[...document.querySelectorAll('#decisions td')].some(td => td.textContent === " + json.dumps(MARKUP) + ")",
        True,
        "the set-weights reason shown literally in the decisions",
    )
    assert await browser.evaluate("document.getElementById('policy').textContent.endsWith(" + json.dumps(MARKUP) + ")")
    assert await browser.evaluate("window.pwned === undefined && document.querySelectorAll('img').length === 0")
    assert await browser.evaluate("document.querySelectorAll('script').length") == 1

    async with TrafficGenerator(stack.traffic_url, body_factory, rate_per_s=200, concurrency=8) as generator:
        await generator.wait_for_responses(400, timeout_s=15)

        def v2_judged_ok(rules: list[dict[str, str]]) -> bool:
            return any(r["rule"] == "error-rate" and r["version"] == "v2" and r["state"] == "ok" for r in rules)

        rules = await page_value(browser, RULES_JS, v2_judged_ok, "the page shows v2's error-rate rule as ok", 30)
        error_rate = next(r for r in rules if r["rule"] == "error-rate" and r["version"] == "v2")
        assert error_rate["value"] != "-" and float(error_rate["threshold"]) > 0, error_rate

        await stack.upstreams["v2"].set_faults_async({"error_rate": 0.5})
        injected = time.monotonic()

        def verifying(rollback: dict[str, Any] | None) -> bool:
            return rollback is not None and rollback["done"] == "false" and "left of 8 s" in rollback["countdown"]

        during = await page_value(browser, ROLLBACK_JS, verifying, "the rollback shown during verification", 30)
        shot = await browser.screenshot(tmp_path / "status-page-during-rollback.png")
        # The DOM at the moment of the screenshot: traffic moved, the switch done, the window counting down.
        versions_then = await browser.evaluate(VERSIONS_JS)
        print(f"fault -> page shows the rollback: {time.monotonic() - injected:.1f} s; screenshot {shot}")
        assert versions_then == [["v1", "100", "100"], ["v2", "0", "0"]], versions_then
        assert during["title"].startswith("Rollback in progress") and "v2 → v1" in during["title"], during
        phases = dict(during["phases"])
        assert phases["switch"] == "ok" and phases["mark"] == "ok" and phases["verify"] == "running", phases
        assert shot.stat().st_size > 10_000

        after = await page_value(browser, ROLLBACK_JS, lambda r: r and r["done"] == "true", "the outcome shown", 30)
    assert after["outcome"] in ("recovered", "inconclusive"), after
    assert [name for name, _ in after["phases"]][-3:] == ["confirm", "verify", "archive"], after
    await browser.screenshot(tmp_path / "status-page-after-rollback.png")
    decisions = await browser.evaluate("[...document.querySelectorAll('#decisions tbody tr')].map(r => r.textContent)")
    assert any("v2 -> v1" in d and "error-rate" in d for d in decisions), decisions
    assert await browser.evaluate("window.pwned === undefined")
