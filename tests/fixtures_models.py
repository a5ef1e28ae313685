"""Tiny Keras classifier/distilled pairs built in seconds (filled in by the detector work)."""
