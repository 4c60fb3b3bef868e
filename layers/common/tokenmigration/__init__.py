"""tokenmigration: move Express sessions to Laravel Sanctum tokens and Laravel database sessions."""

__version__ = "0.1.0"
