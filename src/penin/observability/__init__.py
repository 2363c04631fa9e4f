"""Metrics and structured logs, used by every part and using none of them."""
