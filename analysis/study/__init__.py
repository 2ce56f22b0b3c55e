"""The study: its manifest, settings, tables, volumes, atlas and their validation (the ``Study`` type)."""
