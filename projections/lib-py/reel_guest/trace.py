"""Where an exception was raised, for the message reel shows."""

import re
import traceback

__all__ = ["thrown_at"]

# componentize-py mounts each folder of the component's Python path as /0,
# /1, ...: `/0/app.py` is the project's `app.py`.
_MOUNT = re.compile(r"^/\d+/")


def thrown_at(exc):
    """`app.py:42 in handle`: the innermost frame of `exc`'s traceback outside
    `reel_guest` (else the innermost), or None when it has no traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return None
    mine = [f for f in frames if "/reel_guest/" not in f.filename.replace("\\", "/")]
    frame = (mine or frames)[-1]
    return f"{_MOUNT.sub('', frame.filename)}:{frame.lineno} in {frame.name}"
