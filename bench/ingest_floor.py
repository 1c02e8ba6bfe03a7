"""The floor of posdiag's ingest stack, served beside it by bench/ingest.py: the same uvicorn
workers and FastAPI, one endpoint that reads the body, checks an HMAC of it with the
terminal's key, writes it to a file with fsync and inserts one row. Whatever posdiag does
beyond this (the tar.gz checks, the manifest, redaction, quotas, the fleet) is its cost.

    FLOOR_DB=URL FLOOR_DATA=DIR FLOOR_KEYS=FILE uvicorn --app-dir bench ingest_floor:app --workers 2

FLOOR_KEYS: JSON {sha256 of a token: terminal id}; the key of the HMAC is the token's
sha256, as posdiag's manifest signature. The client sends the HMAC in X-Signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from remote.server import db

metadata = sa.MetaData()
received = sa.Table(
    "floor_received",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("terminal_id", sa.String(128), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("received_at", sa.String(40), nullable=False),
)

app = FastAPI()


def signature(token: str, body: bytes) -> str:
    return hmac.new(bytes.fromhex(hashlib.sha256(token.encode()).hexdigest()), body, hashlib.sha256).hexdigest()


class Floor:
    def __init__(self) -> None:
        self.engine = db.make_engine(os.environ["FLOOR_DB"])
        self.data = Path(os.environ["FLOOR_DATA"])
        self.keys: dict[str, str] = json.loads(Path(os.environ["FLOOR_KEYS"]).read_text())

    def take(self, token: str, sig: str, body: bytes) -> int:
        key = hashlib.sha256(token.encode()).hexdigest()
        terminal_id = self.keys.get(key)
        if terminal_id is None:
            return 401
        expected = hmac.new(bytes.fromhex(key), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig):
            return 422
        name = str(uuid.uuid4())
        path = self.data / name
        with open(path, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        with db.writing(self.engine) as conn:
            conn.execute(received.insert().values(id=name, terminal_id=terminal_id, size=len(body), received_at=db.now()))
        return 201


_floor: Floor | None = None


@app.post("/floor")
async def take(request: Request) -> JSONResponse:
    global _floor
    if _floor is None:
        _floor = Floor()
    token = request.headers.get("authorization", "").partition(" ")[2]
    body = await request.body()
    status = await run_in_threadpool(_floor.take, token, request.headers.get("x-signature", ""), body)
    return JSONResponse({"status": status}, status_code=status)


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})
