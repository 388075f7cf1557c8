from datetime import UTC, datetime

import pytest

from agent.alerts.alert import Alert
from agent.alerts.config import AlertRoute
from agent.alerts.routing import Action, AlertRouter
from tests.unit.alerts.fakes import MODEL, alerts_config

STARTS = datetime(2026, 11, 22, 3, 46, 39, 74480, tzinfo=UTC)


def _alert(status: str = "firing", **labels: str) -> Alert:
    return Alert(
        fingerprint="8c525571fc3b84a1",
        status=status,  # type: ignore[arg-type]
        labels={"model": MODEL, "version": "v2", **labels},
        annotations={"summary": "error rate 7% > 2%"},
        starts_at=STARTS,
        generator_url="http://prometheus/graph",
    )


ROUTER = AlertRouter.from_config(alerts_config(), MODEL)


def test_exact_match_routes_to_its_action_and_names_the_failing_version():
    routed = ROUTER.route(_alert(alertname="ModelErrorRateHigh"), received_via="webhook", receiver="am")
    assert routed is not None
    assert routed.action is Action.ROLLBACK and routed.version == "v2" and routed.route == "errors"
    assert not routed.resolved
    assert "ModelErrorRateHigh firing for fraud version v2: error rate 7% > 2%" in routed.summary
    record = routed.record.alert
    assert routed.record.WhichOneof("source") == "alert"
    assert (record.alertname, record.fingerprint, record.received_via, record.receiver) == (
        "ModelErrorRateHigh",
        "8c525571fc3b84a1",
        "webhook",
        "am",
    )
    assert record.labels["version"] == "v2" and record.annotations["summary"] == "error rate 7% > 2%"
    assert record.generator_url == "http://prometheus/graph"
    assert record.starts_at.ToDatetime(tzinfo=UTC) == STARTS


def test_regex_is_anchored_and_every_matcher_must_match():
    assert ROUTER.route(_alert(alertname="FeatureDriftHigh", severity="warning"), received_via="api").action == "hold"
    assert ROUTER.route(_alert(alertname="FeatureDriftHigh", severity="critical"), received_via="api") is None
    assert ROUTER.route(_alert(alertname="XFeatureDrift", severity="warning"), received_via="api") is None


def test_first_matching_route_wins():
    router = AlertRouter(
        [
            AlertRoute(match={"severity": "info"}, action="ignore"),
            AlertRoute(match={}, action="hold"),
        ],
        model=MODEL,
    )
    assert router.route(_alert(alertname="A", severity="info"), received_via="api") is None
    routed = router.route(_alert(alertname="A", severity="page"), received_via="api")
    assert routed is not None and routed.action is Action.HOLD and routed.route == "routes.1"


def test_no_matching_route_is_ignored():
    assert ROUTER.route(_alert(alertname="SomethingElse"), received_via="webhook") is None


def test_another_models_alert_is_ignored_unless_the_route_takes_any_model():
    assert ROUTER.route(_alert(alertname="ModelErrorRateHigh", model="credit"), received_via="api") is None
    no_model = Alert("ab", "firing", {"alertname": "ModelErrorRateHigh"}, {}, STARTS)
    assert ROUTER.route(no_model, received_via="api") is None
    fleet = Alert("ab", "firing", {"alertname": "GpuNodeDown", "node": "n1"}, {}, STARTS)
    routed = ROUTER.route(fleet, received_via="api")
    assert routed is not None and routed.action is Action.ALERT and routed.version is None
    assert "for any model" in routed.summary


def test_missing_version_label_blames_the_serving_candidate():
    alert = Alert("ab", "firing", {"alertname": "ModelErrorRateHigh", "model": MODEL}, {}, STARTS)
    routed = ROUTER.route(alert, received_via="api")
    assert routed is not None and routed.version is None


def test_version_label_is_configurable():
    router = AlertRouter([AlertRoute(match={}, action="rollback", version_label="model_version")], model=MODEL)
    routed = router.route(_alert(alertname="A", model_version="v3"), received_via="api")
    assert routed is not None and routed.version == "v3"


@pytest.mark.parametrize(
    ("label", "expected"),
    [("rollback", Action.ROLLBACK), ("HOLD", Action.HOLD), ("alert", Action.ALERT)],
)
def test_from_label_takes_the_action_from_the_alert(label, expected):
    routed = ROUTER.route(_alert(alertname="Custom", team="ml", action=label), received_via="api")
    assert routed is not None and routed.action is expected


def test_from_label_ignore_and_bad_values():
    assert ROUTER.route(_alert(alertname="Custom", team="ml", action="ignore"), received_via="api") is None
    for bad in ({"action": "nuke"}, {}):
        routed = ROUTER.route(_alert(alertname="Custom", team="ml", **bad), received_via="api")
        assert routed is not None and routed.action is Action.ALERT  # never moves traffic
        assert "recorded only" in routed.summary


def test_resolved_follows_the_same_route_with_a_distinct_key():
    firing = ROUTER.route(_alert(alertname="ModelErrorRateHigh"), received_via="webhook")
    resolved = ROUTER.route(_alert("resolved", alertname="ModelErrorRateHigh"), received_via="webhook")
    assert firing is not None and resolved is not None
    assert resolved.resolved and resolved.route == firing.route
    assert resolved.dedupe_key != firing.dedupe_key
