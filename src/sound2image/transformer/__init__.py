"""transformer layer."""
