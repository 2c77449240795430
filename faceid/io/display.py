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

NO_DISPLAY_HINT = "run without a window (`display`), writing the results to `output_path` or `jsonl_path`"

# Both OpenCV builds install the same cv2 package; whichever was installed last is the one imported.
GUI_INSTALL_HINT = (
    'for a window install OpenCV\'s GUI build: pip install "faceid[gui]" (opencv-python); if the headless '
    "build was reinstalled over it: pip install --force-reinstall --no-deps opencv-python"
)


def _gui_backend() -> str:
    import cv2

    if hasattr(cv2, "currentUIFramework"):
        return cv2.currentUIFramework() or ""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    backend = match.group(1) if match else ""
    return "" if backend.upper() == "NONE" else backend


def _no_display_reason() -> str | None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "there is no display here (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    return None


def _no_gui_reason() -> str | None:
    if _gui_backend():
        return None
    import cv2

    return f"this OpenCV ({cv2.__version__}) is the headless build, without window support; {GUI_INSTALL_HINT}"


def no_window_reason() -> str | None:
    """Why no window can be shown here (with what to install, where that is the fix), or ``None``."""
    return _no_display_reason() or _no_gui_reason()


def display_available() -> bool:
    """Whether a window can be shown: a GUI-enabled OpenCV and, on Linux, a display to show it on."""
    return no_window_reason() is None


def headless_build_on_a_desktop() -> str | None:
    """The message for a user who has a display but an OpenCV that cannot open windows, else ``None``.

    test.py and capture.py fall back to running without a window where there is no display (a
    server); on a desktop that fallback would be a silent surprise, so they print this instead
    (:func:`faceid.cli.warn_if_no_window`).
    """
    return None if _no_display_reason() else _no_gui_reason()


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
        reason = no_window_reason()
        if reason is not None:
            raise InputError(f"cannot show a window: {reason}; {unavailable}")
        self._opened = False

    def show(self, frame_bgr: np.ndarray, wait_ms: int = 1) -> str:
        """Show ``frame_bgr``; wait up to ``wait_ms`` (0: until a key) and return the key pressed."""
        import cv2

        try:
            cv2.imshow(self.title, frame_bgr)
        except cv2.error as error:
            reason = str(error).strip().splitlines()[-1]
            raise InputError(f"cannot show a window ({reason}); {GUI_INSTALL_HINT}; {self.unavailable}") from error
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
