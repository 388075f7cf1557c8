import json
from datetime import UTC, datetime

import pytest

from agent.alerts.payload import PayloadError, parse_api_alerts, parse_webhook_payload
from tests.unit.alerts.fakes import api_alert, payload, wire_alert


def _raw(body: object) -> bytes:
    return json.dumps(body).encode()


def test_a_real_alertmanager_payload_parses_with_nanosecond_timestamps_and_unset_ends_at():
    # Byte for byte what Alertmanager 0.25 sent in an experiment (plus nanoseconds).
    body = (
        b'{"receiver":"r","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A","model":"m",'
        b'"version":"v2"},"annotations":{"summary":"s"},"startsAt":"2026-11-22T03:46:39.074480123Z",'
        b'"endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"8c525571fc3b84a1"}],'
        b'"groupLabels":{"alertname":"A"},"commonLabels":{"alertname":"A"},"commonAnnotations":{"summary":"s"},'
        b'"externalURL":"http://vm:51507","version":"4","groupKey":"{}:{alertname=\\"A\\"}","truncatedAlerts":0}'
    )
    parsed = parse_webhook_payload(body)
    alert = parsed.alerts[0].to_alert()
    assert parsed.receiver == "r" and parsed.status == "firing"
    assert alert.starts_at == datetime(2026, 11, 22, 3, 46, 39, 74480, tzinfo=UTC)
    assert alert.ends_at is None
    assert alert.alertname == "A" and alert.labels["version"] == "v2"


def test_offsets_are_normalised_to_utc():
    parsed = parse_webhook_payload(_raw(payload(wire_alert(starts_at="2026-11-22T05:46:39.5+02:00"))))
    assert parsed.alerts[0].starts_at == datetime(2026, 11, 22, 3, 46, 39, 500000, tzinfo=UTC)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    body = payload()
    body["newField"] = {"x": 1}
    body["alerts"][0]["newAlertField"] = 1
    assert parse_webhook_payload(_raw(body)).alerts[0].fingerprint == "8c525571fc3b84a1"


@pytest.mark.parametrize("version", ["3", "5", 4, None])
def test_wrong_version_is_refused(version):
    body = payload()
    body["version"] = version
    with pytest.raises(PayloadError, match=r"^version: "):
        parse_webhook_payload(_raw(body))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt: not an RFC 3339 timestamp"),
        (lambda b: b["alerts"][0].update(startsAt="2026-11-22T03:46:39"), "alerts.0.startsAt: not an RFC 3339"),
        (lambda b: b["alerts"][0].update(startsAt="0001-01-01T00:00:00Z"), "alerts.0.startsAt: must be set"),
        (lambda b: b["alerts"][0].update(endsAt=12), "alerts.0.endsAt: not an RFC 3339 timestamp"),
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint: Field required"),
        (lambda b: b["alerts"][0].update(fingerprint="not hex!"), "alerts.0.fingerprint: String should match"),
        (lambda b: b["alerts"][0].pop("startsAt"), "alerts.0.startsAt: Field required"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts.0.status: Input should be 'firing' or 'resolved'"),
        (lambda b: b["alerts"][0]["labels"].update(severity=3), "alerts.0.labels.severity: Input should be a valid"),
        (lambda b: b.update(status="ok"), "status: Input should be 'firing' or 'resolved'"),
        (lambda b: b.pop("alerts"), "alerts: Field required"),
        (lambda b: b.pop("receiver"), "receiver: Field required"),
        (lambda b: b.update(truncatedAlerts=-1), "truncatedAlerts: Input should be greater than or equal to 0"),
    ],
)
def test_bad_or_missing_fields_are_named(mutate, expected):
    body = payload()
    mutate(body)
    with pytest.raises(PayloadError) as err:
        parse_webhook_payload(_raw(body))
    assert expected in str(err.value)


def test_every_bad_field_is_reported_at_once():
    body = payload(wire_alert(), wire_alert())
    body["alerts"][0]["startsAt"] = "nope"
    body["alerts"][1].pop("labels")
    with pytest.raises(PayloadError) as err:
        parse_webhook_payload(_raw(body))
    message = str(err.value)
    assert "alerts.0.startsAt" in message and "alerts.1.labels: Field required" in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"{", "body is not valid JSON"), (b"\xff\xfe", "body is not valid JSON"), (b"[]", "expected a JSON object")],
)
def test_not_json_or_not_an_object(raw, expected):
    with pytest.raises(PayloadError, match=expected):
        parse_webhook_payload(raw)


def test_api_v2_alerts_parse_with_their_status():
    alerts = parse_api_alerts(_raw([api_alert(), api_alert(state="suppressed", silenced_by=("s1",))]))
    assert [a.active for a in alerts] == [True, False]
    assert alerts[0].status.state == "active" and alerts[1].status.silenced_by == ["s1"]
    alert = alerts[0].to_alert()
    assert alert.status == "firing"
    assert alert.starts_at == datetime(2026, 11, 22, 3, 46, 39, 74000, tzinfo=UTC)


def test_api_v2_errors_name_the_field():
    bad = api_alert()
    bad["status"]["state"] = "firing"
    with pytest.raises(PayloadError, match=r"0\.status\.state: Input should be"):
        parse_api_alerts(_raw([bad]))
    with pytest.raises(PayloadError, match="expected a JSON array"):
        parse_api_alerts(b"{}")
