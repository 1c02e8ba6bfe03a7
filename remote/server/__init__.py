"""The support server: bundle ingest, query API, probe requests and web pages.

    app.py       create_app(): wires everything below into one FastAPI app
    db.py        the schema (SQLAlchemy Core, SQLite and PostgreSQL) and engine set-up
    blobs.py     bundle files on disk, content-addressed by sha256
    auth.py      terminal tokens, user passwords (scrypt), signed session cookies, CSRF
    ingest.py    validation of an uploaded bundle (size, tar safety, manifest, hashes, signature)
    store.py     reads and writes of bundles, terminals, users and commands
    api.py       /api/v1 (JSON), web.py the HTML pages, chart.py the SVG chart
    metrics.py   Prometheus counters and the ingest latency histogram
    cli.py       posdiag-support
"""
