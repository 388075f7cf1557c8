from agent.adapters.xds.resources import ModelTopology, VersionUpstream

TOPOLOGY = ModelTopology(
    model="credit",
    upstreams=(VersionUpstream("v1", "127.0.0.1", 8001), VersionUpstream("v2", "127.0.0.1", 8002)),
    listener_host="127.0.0.1",
    listener_port=10000,
)
