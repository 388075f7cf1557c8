"""The fleet audit store (PostgreSQL): one trail for every pod, fed from each agent's local trail (the outbox)."""
