"""Visit outcomes: what visits found (records), how well diagnoses sent people (measures),
and what the fleet learns from them (knowledge, learning, tables). docs/outcomes.md."""
