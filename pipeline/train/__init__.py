"""Training scripts: face CNN, audio model, text model, fusion head. Shared loop helpers in ``common``."""
