"""Signal sources: Envoy's admin stats, the model servers' /metrics, OIP v2 health probes."""
