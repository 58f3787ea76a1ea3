"""Written by `mailgate plugin build`: the plugin's `app` module, with what its `Info.describe`
and stage `handle` methods return checked (mailgate.checked), so that a forgotten `return` or a
wrong value is named in the plugin's own terms."""
from app import *  # noqa: F401,F403 (the plugin's classes, as componentize-py looks them up)
import app as _app
import mailgate as _mg

for _name in ("Info",) + _mg.STAGE_CLASSES:
    if isinstance(getattr(_app, _name, None), type):
        globals()[_name] = _mg.checked(getattr(_app, _name))
