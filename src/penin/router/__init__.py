"""The router: an OpenAI-compatible, cost-aware gateway over many providers."""
