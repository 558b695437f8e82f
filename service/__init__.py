"""wattserve: serve Hugging Face models and report the energy and carbon of every request."""

__version__ = "0.1.0"
