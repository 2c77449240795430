"""faceid: enrol a few photos per person, then recognise them live.

A frozen backbone embeds each face once into a per-person feature cache; a small
similarity network trained on |f1 - f2| decides "same person?"; identification
matches new faces against the cache. Importing the package loads no model.
"""

__version__ = "0.1.0"
