"""llmsim: a simulator of LLM serving on GPU clusters."""
__version__ = "0.1.0"
