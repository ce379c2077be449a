"""Converters from other tools' training configs to a JobSpec (torch-free)."""
