"""posdiag terminal side: CLI, runner, correlation, bundle, outbox, daemon."""

__version__ = "0.1.0"
