"""chinwag: a group-chat backend whose notifications always arrive."""

__version__ = "0.1.0"
