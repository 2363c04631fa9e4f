"""Scoped API keys (read, append, route, admin), kept in the ledger.

The key ring is in ``keyring``; its public names are repeated here.
"""

from penin.keys.keyring import ApiKey, ApiKeyError, KeyRing, Scope

__all__ = ["ApiKey", "ApiKeyError", "KeyRing", "Scope"]
