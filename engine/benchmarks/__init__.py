"""Speed: retrieval cache, FLOPs, per-stage time and memory, the speed probe (quality is engine.evaluation)."""
