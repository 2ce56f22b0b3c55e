"""Torch networks and their math (score network, multiscale score norms, Spatial-MSMA flow, GNSM).

This package may import torch and numpy, never dash or plotly; ``tests/test_layering.py`` guards that.
"""
