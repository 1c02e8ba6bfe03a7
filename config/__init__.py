"""Packaged configuration and knowledge base (data only)."""
