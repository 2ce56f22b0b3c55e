"""Spatial-MSMA: patch score norms, the conditional normalizing flow on them, voxel heatmaps and their baselines."""
