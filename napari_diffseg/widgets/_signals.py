"""Signal wiring that cannot pass Qt's arguments into the dock's slots by mistake."""

from __future__ import annotations

from collections.abc import Callable


def on_click(button, slot: Callable[[], object]) -> None:
    """Connect `button.clicked` to a slot that takes no argument.

    Qt's ``clicked(bool)`` passes the button's checked state; connected straight to a method
    with an optional parameter (``toggle_verified(frame=None)``) that ``False`` became frame 0,
    and the Verify button marked frame 0 instead of the frame on screen. Every push button of
    the dock is connected through here so no slot can mistake the flag for an argument.
    """
    button.clicked.connect(lambda *_ignored: slot())
