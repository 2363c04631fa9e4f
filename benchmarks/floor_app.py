"""The framework's floor: one FastAPI route that returns a constant.

node_bench.py serves it with the node's uvicorn settings, so the gap between
this app and a node route is what the node's own work costs.
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def constant() -> dict[str, str]:
    return {"status": "ok"}
