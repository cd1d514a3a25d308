"""The leaderboard, in rooms: ``records`` (every record of the results layout, legacy relabelling,
fingerprints, provenance) → ``table`` (the ranked table model and statistics) → ``figures`` (PNGs)
and ``searches`` (the search sections) → ``page`` (assembly and render of the HTML page); beside
the page, ``export`` (paper-ready tables from the same table model); ``__main__`` (the command
line)."""
from .page import build_context, render

__all__ = ["build_context", "render"]
