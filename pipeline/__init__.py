"""Multimodal (face, voice, words) per-second video emotion analysis."""
__version__ = "0.1.0"
