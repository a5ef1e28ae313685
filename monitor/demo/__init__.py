"""The one-command demo and its traffic generator (``demo`` and ``produce-demo``).

``traffic`` makes labelled records (clean and corrupted digits, malformed ones),
``pacing`` sends them at a steady rate, ``topics`` creates and reads topics,
``status`` reads the worker's /metrics, ``summary`` tallies the alert topic against
what was sent, ``session`` runs the whole demo.
"""
