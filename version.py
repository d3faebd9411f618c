"""fxopt's version (read by pyproject.toml, written into every artifact's manifest)."""
__version__ = "0.1.0"
