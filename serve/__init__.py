"""Serving: an OpenAI-compatible /v1/moderations API and a batch predict CLI."""
