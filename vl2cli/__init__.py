"""vl2: batch VideoLLaMA 2 inference."""
__version__ = "0.1.0"
