"""Outgoing notifications: decisions on record, told to webhook receivers (docs/notifications.md)."""
