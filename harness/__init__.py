"""Continual-learning harness: SFT vs SDFT on a stream of tasks, with forgetting measured after every stage."""

__version__ = "0.1.0"
