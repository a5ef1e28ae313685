"""The model-distillation detector: the method, its scores, persistence and defaults.

Submodules that need TensorFlow (``distillation``, ``losses``, ``architectures``) are not
imported here, so ``manifest`` (reading a saved detector's description) and
``alibi_import``'s readers stay TensorFlow-free.
"""
