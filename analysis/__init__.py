"""Numbers on arrays and tables: manifest and volume I/O, atlas handling, the demo cohort, statistics.

This package never imports torch or dash (see DESIGN.md, layers); ``tests/test_layering.py`` guards that.
"""
