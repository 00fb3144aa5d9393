"""Derived corpora: a corpus built from the task's corpus, cached like an index."""
