"""PENIN-Ω: a self-improving, auditable LLM gateway."""

__version__ = "0.1.0"
