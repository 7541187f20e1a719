"""hardmine: find the training samples a model still gets wrong, show them more often.

Importing ``hardmine`` loads nothing heavy; the engine is ``hardmine.core``.
"""

__version__ = "0.1.0"
