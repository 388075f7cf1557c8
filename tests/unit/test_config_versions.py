"""versions[]: endpoints by IP or DNS name, and versions of one model sharing a server (oip_version)."""

import ipaddress
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, parse_config

SHARED = """model: {name: iris}
versions:
  - tag: v1
    endpoint: "127.0.0.1:8080"
    oip_version: "1"
  - tag: v2
    endpoint: "127.0.0.1:8080"
    oip_version: "2"
stable: v1
candidate: v2
"""


def test_versions_on_one_server_with_versioned_paths_are_accepted():
    config = parse_config(SHARED, "agent.yaml")
    assert [(v.tag, v.endpoint, v.oip_version) for v in config.versions] == [
        ("v1", "127.0.0.1:8080", "1"),
        ("v2", "127.0.0.1:8080", "2"),
    ]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        # v2 without a versioned path: the line of v2's endpoint, naming both versions.
        (
            ('    oip_version: "2"\n', ""),
            "agent.yaml:7: versions.1.endpoint: v2 and v1 (versions.0) share the endpoint 127.0.0.1:8080: "
            "set oip_version on both",
        ),
        (
            ('    oip_version: "1"\n', ""),
            "agent.yaml:6: versions.1.endpoint: v2 and v1 (versions.0) share the endpoint",
        ),
        (
            ('oip_version: "2"', 'oip_version: "1"'),
            "agent.yaml:8: versions.1.oip_version: v2 and v1 (versions.0) share the endpoint 127.0.0.1:8080 and "
            "the oip_version '1'",
        ),
        (('oip_version: "2"', 'oip_version: "2/../x"'), "agent.yaml:8: versions.1.oip_version: String should match"),
    ],
)
def test_a_shared_endpoint_without_distinct_versioned_paths_is_refused_at_its_line(patch, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(SHARED.replace(*patch), "agent.yaml")
    assert str(err.value).startswith(expected), str(err.value)


def test_same_server_named_in_different_case_is_one_endpoint():
    text = SHARED.replace('"127.0.0.1:8080"\n    oip_version: "1"\n', '"Models.svc:8080"\n').replace(
        '"127.0.0.1:8080"\n    oip_version: "2"\n', '"models.svc:8080"\n'
    )
    with pytest.raises(ConfigError, match="share the endpoint"):
        parse_config(text, "agent.yaml")


@pytest.mark.parametrize(
    "endpoint",
    ["localhost:8002", "model-v2.models.svc.cluster.local:8080", "model-v2:80", "10.0.0.7:8080", "[::1]:8080"],
)
def test_ip_literals_and_rfc1123_host_names_are_endpoints(endpoint):
    config = parse_config(SHARED.replace('"127.0.0.1:8080"\n    oip_version: "2"', f'"{endpoint}"'), "agent.yaml")
    assert config.versions[1].endpoint == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "model_v2:8080",  # underscore
        "-model:8080",  # label starts with a hyphen
        "model-.svc:8080",  # label ends with a hyphen
        "a..b:8080",  # empty label
        "10.0.0.256:8080",  # not an IP, and an all-digit last label is no host name either
        "x" * 64 + ":8080",  # label longer than 63
        "[localhost]:8080",
        "model v2:8080",
        "model:0",
        "model",
    ],
)
def test_bad_host_names_are_refused_naming_the_field_and_line(endpoint):
    with pytest.raises(ConfigError) as err:
        parse_config(SHARED.replace('"127.0.0.1:8080"\n    oip_version: "2"', f'"{endpoint}"'), "agent.yaml")
    assert str(err.value).startswith("agent.yaml:7: versions.1.endpoint: endpoint must be HOST:PORT"), str(err.value)


def test_the_topology_envoy_gets_carries_names_and_versioned_paths():
    from agent.adapters.xds.resources import OipVersionPath
    from agent.runtime import topology_from_config

    text = SHARED.replace("model: {name: iris}", "model: {name: iris-prod}\nprobes: {oip_model: iris}").replace(
        '"127.0.0.1:8080"\n    oip_version: "2"', '"localhost:8081"'
    )
    upstreams = topology_from_config(parse_config(text, "agent.yaml")).upstreams
    assert [(u.version, u.host, u.port, u.by_name, u.oip_path) for u in upstreams] == [
        ("v1", "127.0.0.1", 8080, False, OipVersionPath("iris", "1")),
        ("v2", "localhost", 8081, True, None),
    ]


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(
    host=st.one_of(
        st.text(max_size=80),
        st.from_regex(r"[A-Za-z0-9.\-_\[\]:]{0,70}", fullmatch=True),
        st.ip_addresses().map(str),
    ),
    port=st.integers(min_value=-1, max_value=70000),
)
def test_any_endpoint_is_accepted_as_an_ip_or_a_host_name_or_refused_at_its_line(host, port):
    endpoint = f"{host}:{port}"
    text = SHARED.replace('"127.0.0.1:8080"\n    oip_version: "2"', json.dumps(endpoint))
    try:
        config = parse_config(text, "agent.yaml")
    except ConfigError as err:
        assert str(err).startswith("agent.yaml:"), str(err)
        return
    from agent.adapters.xds.resources import ModelTopology, VersionUpstream, build_cluster

    v2 = config.versions[1]
    upstream = VersionUpstream("v2", v2.host, v2.port)
    assert 0 < v2.port < 65536
    assert upstream.by_name == (ipaddress_or_none(v2.host) is None)
    build_cluster(ModelTopology("m", (upstream,), "127.0.0.1", 1), upstream)


def ipaddress_or_none(host: str) -> object:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
