"""Kafka fixtures (filled in by the local-broker work)."""
