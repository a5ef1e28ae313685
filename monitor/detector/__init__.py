"""The model-distillation detector: the method, its scores, persistence and defaults.

Submodules that need TensorFlow (``distillation``, ``losses``, ``architectures``) are not
imported here, so ``persistence.read_manifest`` and ``alibi_import``'s readers stay
TensorFlow-free.
"""
