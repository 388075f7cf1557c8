import json
from datetime import UTC, datetime

import pytest

from agent.alerts.alert import Alert
from agent.alerts.payload import (
    MAX_LABEL_NAME_BYTES,
    MAX_LABEL_VALUE_BYTES,
    MAX_LABELS,
    PayloadError,
    parse_api_alerts,
    parse_webhook_payload,
)
from agent.alerts.routing import AlertRouter
from tests.unit.alerts.fakes import MODEL, alerts_config, api_alert, payload, wire_alert


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
    [
        (b"{", "body is not valid JSON"),
        (b"\xff\xfe", "body is not UTF-8: byte 0xff at line 1 column 1"),
        (b"", "body is empty"),
        (b"[]", "expected a JSON object"),
        (b'"4"', "expected a JSON object, got str"),
        (b"null", "expected a JSON object, got NoneType"),
    ],
)
def test_not_json_or_not_an_object(raw, expected):
    with pytest.raises(PayloadError, match=expected):
        parse_webhook_payload(raw)


def test_api_v2_alerts_parse_with_their_status():
    answer = parse_api_alerts(_raw([api_alert(), api_alert(state="suppressed", silenced_by=("s1",))]))
    alerts = answer.alerts
    assert answer.refused == []
    assert [a.active for a in alerts] == [True, False]
    assert alerts[0].status.state == "active" and alerts[1].status.silenced_by == ["s1"]
    alert = alerts[0].to_alert()
    assert alert.status == "firing"
    assert alert.starts_at == datetime(2026, 11, 22, 3, 46, 39, 74000, tzinfo=UTC)


def test_api_v2_an_invalid_alert_is_refused_alone_naming_the_field():
    bad = api_alert(fingerprint="02")
    bad["status"]["state"] = "firing"
    too_many = api_alert(fingerprint="04", **{f"l{i}": "x" for i in range(300)})
    answer = parse_api_alerts(_raw([api_alert(fingerprint="01"), bad, 7, too_many, api_alert(fingerprint="05")]))
    assert [a.fingerprint for a in answer.alerts] == ["01", "05"]
    assert answer.refused[0].startswith("1.status.state: Input should be")
    assert answer.refused[1].startswith("2: Input should be a valid dictionary")
    assert answer.refused[2] == "3.labels: 303 entries, more than the 256 allowed"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{}", "expected a JSON array"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b'[{"labels": {"a": "\\ud800"}}]', "0.labels.a: string is not valid Unicode text"),
        (b"[NaN]", "NaN is not a JSON number"),
    ],
)
def test_api_v2_an_unusable_body_is_refused_whole(raw, expected):
    with pytest.raises(PayloadError, match=expected):
        parse_api_alerts(raw)


# Each of these crashed later, when the audit record was built or in the parser, with a 500: now a PayloadError.
@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda b: b["alerts"][0]["labels"].update(team="\ud800"), "alerts.0.labels.team: string is not valid Unicode"),
        (lambda b: b["alerts"][0]["annotations"].update(summary="x\udfff"), "alerts.0.annotations.summary: string"),
        (lambda b: b["alerts"][0]["labels"].update({"\udc00": "v"}), "alerts.0.labels: key '\\udc00' is not valid"),
        (lambda b: b.update(receiver="r\ud800"), "receiver: string is not valid Unicode text"),
        (lambda b: b["alerts"][0].update(generatorURL="\ud800"), "alerts.0.generatorURL: string is not valid"),
        (
            lambda b: b.update(extra=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
            "nested deeper than 32",
        ),
        (lambda b: b["alerts"][0].update(startsAt="9999-12-31T23:59:59-01:00"), "alerts.0.startsAt: timestamp out of"),
    ],
)
def test_input_that_crashed_later_is_refused_naming_the_field(mutate, expected):
    body = payload()
    mutate(body)
    with pytest.raises(PayloadError) as err:
        parse_webhook_payload(json.dumps(body).encode())
    assert expected in str(err.value)
    str(err.value).encode()  # safe to log


def test_an_integer_too_long_for_python_is_refused():
    raw = json.dumps(payload()).replace('"truncatedAlerts": 0', '"truncatedAlerts": ' + "9" * 5000).encode()
    with pytest.raises(PayloadError, match=r"^body is not valid JSON: an integer with 5000 digits is too long$"):
        parse_webhook_payload(raw)


def _limits_body(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> bytes:
    body = payload()
    body["alerts"][0]["labels"].update(labels or {})
    body["alerts"][0]["annotations"].update(annotations or {})
    return json.dumps(body).encode()


def test_label_maps_are_bounded_in_count_and_size_and_the_bounds_themselves_pass():
    filler = {f"l{i}": "x" for i in range(MAX_LABELS - 3)}  # alertname, model, version are already there
    at_limit = {"k" * MAX_LABEL_NAME_BYTES: "é" * (MAX_LABEL_VALUE_BYTES // 2)}
    parse_webhook_payload(_limits_body(filler))
    parse_webhook_payload(_limits_body(at_limit, {"description": "d" * MAX_LABEL_VALUE_BYTES}))

    with pytest.raises(PayloadError, match=r"^alerts\.0\.labels: 257 entries, more than the 256 allowed$"):
        parse_webhook_payload(_limits_body({**filler, "one": "more"}))
    with pytest.raises(PayloadError, match=r"alerts\.0\.labels\.k+\.\.\.\.\[key\]: 1025 bytes of UTF-8, more than"):
        parse_webhook_payload(_limits_body({"k" * (MAX_LABEL_NAME_BYTES + 1): "v"}))
    with pytest.raises(PayloadError, match=r"^alerts\.0\.annotations\.d: 16386 bytes of UTF-8, more than the 16384"):
        parse_webhook_payload(_limits_body(annotations={"d": "é" * (MAX_LABEL_VALUE_BYTES // 2 + 1)}))


def test_whatever_parses_can_be_recorded_in_the_audit_trail():
    body = payload(wire_alert(team="😀 \u0000 \ufffe"))
    alert = parse_webhook_payload(json.dumps(body).encode()).alerts[0].to_alert()
    routed = AlertRouter.from_config(alerts_config(), MODEL).route(alert, received_via="webhook")
    assert routed is not None
    assert routed.record.alert.labels["team"] == "😀 \u0000 \ufffe"
    assert routed.record.SerializeToString()
    assert isinstance(alert, Alert)


def test_a_flood_of_errors_is_summarised():
    body = payload(*[wire_alert(starts_at="nope") for _ in range(30)])
    with pytest.raises(PayloadError) as err:
        parse_webhook_payload(json.dumps(body).encode())
    message = str(err.value)
    assert message.count("not an RFC 3339 timestamp") == 10 and message.endswith("and 20 more errors")
