"""openft: a self-hosted fine-tuning platform that speaks the OpenAI API."""

__version__ = "0.1.0"
