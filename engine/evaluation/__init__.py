"""Evaluation of colored pages against ground truth: the paper's metrics (CLIP-IS, FID, PSNR, SSIM, AS)."""
