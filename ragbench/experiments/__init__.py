"""Experiment stages: probes that answer the same queries under controlled contexts (hard negatives)."""
