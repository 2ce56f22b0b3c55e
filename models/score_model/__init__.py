"""The score model: VE noise schedule, denoising score-matching loss, the noise-conditioned 3-D network on a low-rank
Gaussian prior, its training and the multiscale score norms."""
