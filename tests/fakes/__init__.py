"""Fake LLM providers on loopback that speak each wire protocol and inject faults."""
