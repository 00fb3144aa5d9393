"""Rerankers: reorder the top of one upstream ranking (listwise LLM, FIRST, ICR, cross-encoder)."""
