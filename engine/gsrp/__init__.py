"""GSRP: guided super-resolution (paper 3.3): the fusion network and the guided VAE decode."""
