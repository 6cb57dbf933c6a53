"""ICP: in-context colorization (paper 3.2): the Colorization Guide and the guided denoising loop."""
