"""The feature cache (storage, :mod:`.cache`), filling it (:mod:`.extract`, :mod:`.engine`,
:mod:`.embedding`) and its normalisation statistics (:mod:`.stats`).

Matching reads :mod:`.cache` and :mod:`.stats` only, which import no backbone or detector.
"""
