"""The moderation contract: policy, prompt, verdict format, models and batched moderation."""
