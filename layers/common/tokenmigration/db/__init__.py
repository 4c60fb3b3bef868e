"""The Laravel tables we read and write, and the project's own additions to the schema."""
