"""Model-card templates (Jinja2, rendered through ``huggingface_hub.ModelCard.from_template``)."""
