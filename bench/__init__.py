"""Benchmarks (``make bench``): ``bench/run.py`` runs the whole suite; modules are its stages."""
