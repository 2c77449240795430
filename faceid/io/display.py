"""The preview window of test.py and capture.py: one class, shown only where a display exists."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

import numpy as np

from faceid.errors import InputError

if TYPE_CHECKING:  # annotations only: typing.Self needs Python 3.11
    from typing_extensions import Self

NO_DISPLAY_HINT = (
    "install opencv-python (with GUI support) instead of opencv-python-headless and run where a display "
    "is available, or pass --no_display"
)


def _gui_backend() -> str:
    import cv2

    if hasattr(cv2, "currentUIFramework"):
        return cv2.currentUIFramework() or ""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    backend = match.group(1) if match else ""
    return "" if backend.upper() == "NONE" else backend


def display_available() -> bool:
    """Whether a window can be shown: a GUI-enabled OpenCV and, on Linux, a display to show it on."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return bool(_gui_backend())


class Window:
    """A named OpenCV window; :meth:`show` returns the key pressed (lower case, ``""`` for none).

    Args:
        title: the window's name.
        unavailable: what to tell the user when no window can be shown (the fix differs:
            test.py can run headless, capture.py's ``s`` key needs a window).
    """

    def __init__(self, title: str = "faceid", unavailable: str = NO_DISPLAY_HINT) -> None:
        self.title = title
        self.unavailable = unavailable
        if not display_available():
            raise InputError(f"cannot show a window: no GUI support or no display here; {unavailable}")
        self._opened = False

    def show(self, frame_bgr: np.ndarray, wait_ms: int = 1) -> str:
        """Show ``frame_bgr``; wait up to ``wait_ms`` (0: until a key) and return the key pressed."""
        import cv2

        try:
            cv2.imshow(self.title, frame_bgr)
        except cv2.error as error:
            reason = str(error).strip().splitlines()[-1]
            raise InputError(f"cannot show a window ({reason}); {self.unavailable}") from error
        self._opened = True
        key = cv2.waitKey(wait_ms) & 0xFF
        return "" if key == 0xFF else chr(key).lower()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        import cv2

        if self._opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # lets the GUI event loop actually close the window
