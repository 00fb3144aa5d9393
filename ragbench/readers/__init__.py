"""Readers: an LLM answers each question from what the stages before it retrieved."""
