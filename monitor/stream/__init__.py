"""Streaming side: decoding records, batching, scoring, publishing and committing."""
