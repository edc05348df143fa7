"""Neural modules, their configs, and the one registry that loads them (``models.registry.load``)."""
