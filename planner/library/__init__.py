"""The case library: planned and performed cases, de-identified, searchable, with outcomes.

``open_library(root, url)`` opens (creating and migrating) a library; see :mod:`.store` for the
storage, :mod:`.facts` for what is derived and how it is de-identified, :mod:`.query` for search,
similarity and the teaching export, :mod:`.rates` for the local risk figures and :mod:`.learn`
for learning the department's choices of trajectory.
"""

from .store import CaseView, Library, open_library

__all__ = ["CaseView", "Library", "open_library"]
