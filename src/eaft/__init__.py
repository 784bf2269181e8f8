"""eaft: fine-tune language models without forgetting (Entropy-Adaptive Fine-Tuning and its baselines)."""

__version__ = "0.1.0"
