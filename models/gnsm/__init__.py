"""Gumbel-noise score matching (GNSM, dissertation ch. 4): scores of one-hot categorical features relaxed with
ExpConcrete noise, and of continuous features with Gaussian denoising score matching, in one residual MLP."""
