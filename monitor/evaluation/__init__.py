"""Does the detector catch harmful inputs? Offline evaluation behind ``distillation-monitor evaluate``.

``metrics`` (separation and flagged rates), ``harm`` (corrupted sets and the
harmful/harmless groups), ``windows`` (KS drift trials on contaminated score windows),
``suite`` (one seed's run), ``summary`` (across seeds, the quality bar), ``report`` and
``plots`` (terminal, JSON, PNG). Only ``suite`` touches a detector; everything else works
on plain score arrays, so it is testable without TensorFlow.
"""
