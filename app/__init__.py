"""The Dash explorer. It only reads published runs and must start without importing torch.

``tests/test_layering.py`` guards that rule.
"""
