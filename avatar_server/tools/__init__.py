"""Tools (issue 12): ``backend_rpc`` tool calls answered by the site's own backend through the server.

``service.ToolService`` hears sessions start and end (a session observer). For a session whose tools
include ``backend_rpc`` ones it calls the upstream's ``connect_backend`` once, holds the channel it
answers — the local engine's WebSocket (``channel``), or Runway's LiveKit room (``livekit_rpc``, the
only module that imports ``livekit``) — and answers each call with ``handler.ToolHandler``: the caller
must be the avatar's worker (identity ``worker:…``), the payload is parsed, the tool's ``url`` gets a
POST of ``{sessionId, siteId, tool, args}`` signed like webhooks (``site_backend``), and the JSON result
or an error goes back. ``client_event`` tools need nothing here: they reach the page over the data
channel (docs/tools.md).
"""

from .handler import ToolHandler
from .service import ToolService
from .site_backend import SiteBackend

__all__ = ["SiteBackend", "ToolHandler", "ToolService"]
