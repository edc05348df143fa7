"""Evaluation of trained models on labelled data."""
