"""The support server: bundle ingest, query API, probe requests and web pages.

    app.py       create_app(): the API, the pages, /healthz and /metrics in one FastAPI app
    service.py   the server's state and the operations API and pages share
    db.py        the schema (SQLAlchemy Core, SQLite and PostgreSQL) and engine set-up
    store.py     reads and writes of bundles, terminals, users and probe requests
    blobs.py     bundle files in a directory or S3-compatible store, content-addressed by sha256
    retention.py removal of expired bundles, rows then the blobs no row names
    leases.py    one holder at a time across servers (advisory lock or lease row)
    preflight.py what serve refuses to start on, and what check reports
    auth.py      terminal tokens, user passwords (scrypt), signed session cookies, CSRF
    ingest.py    checks of an uploaded bundle (size, tar safety, manifest, hashes, signature)
    api.py       /api/v1 (JSON); models.py its response shapes
    web.py       the HTML pages (templates/); chart.py the SVG chart's geometry
    metrics.py   Prometheus metrics, one view over every worker (multiprocess mode)
    embedded.py  the server in a thread on loopback (posdiag demo, tests)
    cli.py       posdiag-support
"""
