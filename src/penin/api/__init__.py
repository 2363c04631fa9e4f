"""The HTTP node: FastAPI routes, problem documents, auth and request logging."""
