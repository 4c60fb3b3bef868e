"""The ``tokenmigration`` command line."""
