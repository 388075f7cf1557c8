"""Progressive delivery: rollout plans and the rollout state machine (pure data; the engine drives it)."""
