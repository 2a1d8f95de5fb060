"""Video data: reader (``video``), synthetic suite (``synthetic``), frozen encoders (``encoders``),
feature cache (``cache``) and the cache filler used by train / eval (``features``).
CLI: ``python -m harness.data --help``. Modules are imported on demand (no heavy imports here)."""
