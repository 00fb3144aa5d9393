"""LLM judges: stages that score answers (judge) or grade documents (relevance_judge), and their prompts and parsers."""
