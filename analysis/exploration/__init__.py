"""The hypothesis chain of dissertation ch. 6: the SOM and its grid sweep, ROI statistics, behaviour correlations, and
the explorer's slicing arithmetic."""
