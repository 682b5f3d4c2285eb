"""Training helpers for train_grpo.py: faster CPU rollouts and run tracking."""
