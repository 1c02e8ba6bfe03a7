"""Upload client and support server."""
