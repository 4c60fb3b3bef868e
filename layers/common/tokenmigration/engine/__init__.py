"""The migration engine: plan, migrate, roll back, report. Free of AWS event shapes."""
