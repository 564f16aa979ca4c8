"""How things look: every figure (matplotlib) and HTML (Jinja2 templates, autoescape)."""
