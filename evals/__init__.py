"""Evaluation: metrics, runners, baselines, robustness and reports."""
