"""The case library: planned and performed cases, de-identified, searchable, with outcomes.

``open_library(root, url)`` opens (creating and migrating) a library; see :mod:`.store` for the
storage, :mod:`.facts` for what is derived and how it is de-identified, :mod:`.query` for search,
similarity and the teaching export, :mod:`.rates` for the local risk figures, :mod:`.learn`
for learning the department's choices of trajectory and :mod:`.choice` for recording them.

For the web review: :func:`record_choice` (the operator's choice of trajectory, into the plan
folder's ``choice.json``) and :func:`similar_for_plan` (a plan's most similar library cases as
JSON-ready dicts).
"""

from .choice import read_choice, record_choice
from .query import similar_for_plan
from .store import CaseView, Library, open_library

__all__ = ["CaseView", "Library", "open_library", "read_choice", "record_choice", "similar_for_plan"]
