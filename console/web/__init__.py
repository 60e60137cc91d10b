"""The village doctor's console, served by the gateway itself (`http:` in the config).

`mount_console(gateway)` adds the pages to `Gateway.http_app`; everything the
pages need (templates, CSS, JS) is in this package: the clinic box may be
offline, so nothing comes from a CDN. See `pages.py` for the routes.
"""

from console.web.pages import Console, mount_console

__all__ = ["Console", "mount_console"]
