"""The live loop's stages, one file each. Each is a plain object with a ``process`` method (the
capture source is a producer with ``read``); ``app.pipeline`` runs them in threads."""
