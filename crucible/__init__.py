"""Crucible: data labelling and model lifecycle.

This package must stay importable without Django: the client (`crucible.client`) and the
command-line tool (`crucible.cli`) live here and speak only the REST API.
"""

__version__ = "0.1.0"
