"""Numbers on arrays and tables: manifest and volume I/O, atlas handling, the demo cohort, statistics.

It never imports torch, dash or the project's other packages (docs/architecture.md); ``tests/test_layering.py``
guards that.
"""
