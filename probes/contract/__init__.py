"""The probe contract: what a probe sees of the rest of posdiag, and the pieces every package
shares. It imports nothing from agent/ or remote/; both import it (docs/architecture.md).

    records.py      what a probe returns: Observation, Finding, Status, Severity, MetricValue
    settings.py     the settings base: `bounded`, ProbeSettings, HostSettings
    errors.py       the exception tree and its exit codes
    config_file.py  locate, read, merge and type-check posdiag.toml tables

A package, not modules beside the probes: probes/ is scanned and every module in it is a probe.
"""
