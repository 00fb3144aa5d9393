"""ragbench: evaluate retrieval-augmented generation pipelines with numbers you can trust."""

__version__ = "0.1.0"
