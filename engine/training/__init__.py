"""Training (paper 3.2/3.3/4.1): dataset preparation from colored chapters, ICP (guide + LoRA) and GSRP (fusion network) training."""
