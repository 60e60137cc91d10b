"""The village doctor's console, served by the gateway itself (`http:` in the config).

`mount_console(app, sources)` adds the pages to the gateway's HTTP app; what
they read is `ConsoleSources` (sources.py), never the gateway itself. Everything the
pages need (templates, CSS, JS) is in this package: the clinic box may be
offline, so nothing comes from a CDN. See `pages.py` for the routes.
"""

from console.web.pages import Console, mount_console
from console.web.sources import ConsoleSources

__all__ = ["Console", "ConsoleSources", "mount_console"]
