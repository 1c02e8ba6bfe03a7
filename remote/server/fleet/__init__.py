"""The fleet layer of the support server (docs/fleet.md).

schema     tables (on db.metadata, created with the rest)
timing     event time and its clamp
stats      Poisson and binomial tails
inventory  terminals, labels, heartbeats, health trends (at risk)
problems   signatures and their rollups
outage     the outage detector; regression: the version detector
incidents  incidents, fleet dispatch (hold), acknowledgement and dismissal, what a terminal is told
baseline   the outage baseline's rollups (failing terminal-hours, active members)
seasonal   the seasonal, shrunk baseline rate
breadth    who may open an outage and when it may hold
signal     which bundles the detectors count (no business outcomes)
webhooks   the delivery table and its sender
engine     Fleet: what ingest calls, and the background sweep
"""
