"""webui layer."""
