"""Envoy's xDS control plane: snapshot builder, per-stream protocol state, snapshot cache, gRPC servicer."""
