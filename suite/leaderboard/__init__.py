"""The leaderboard: the HTML page (``page``), paper-ready tables (``export``), the command line
(``__main__``)."""
from .page import build_context, render

__all__ = ["build_context", "render"]
