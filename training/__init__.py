"""The training library behind train_grpo.py: recipe, data, sft, grpo, tracking, resume, artifacts, pipeline, Modal."""
