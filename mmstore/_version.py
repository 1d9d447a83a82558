"""The package version, in one place (the package root and the service read it)."""

__version__ = "0.1.0"
