"""Lesion-segmentation evaluation of voxel anomaly maps (dissertation ch. 5.4)."""
