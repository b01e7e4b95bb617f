"""The page's Data set tab: the Compare tab's sibling that scores models over many images with ``attnviz eval``'s
code (:mod:`attnviz.evaluation.run`), in the background of the tab.

:mod:`.settings` (the operator's caps and folders), :mod:`.jobs` (one tab's job: its folder, thread, stop flag),
:mod:`.views` (table, progress, disagreement rows), :mod:`.widgets` (the layout), :mod:`.handlers` (events and
the ``/evaluate`` API endpoint).
"""
