"""The waiting room and the request budget, as the admin console shows them."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import BUDGET, LOAD, SESSIONS
from ..models.session_views import BudgetView, WaitingLane, WaitingRoomView
from ..sessions.room import ADMIN_LANE
from .auth import require_admin

routes = web.RouteTableDef()


@routes.get("/v1/waiting-room")
async def waiting_room(request: web.Request) -> web.Response:
    require_admin(request)
    room = request.app[SESSIONS].room
    budget = request.app[BUDGET]
    snap = await room.snapshot()
    lanes = [WaitingLane(siteId=None if lane == ADMIN_LANE else lane, waiting=n)
             for lane, n in sorted(snap.by_lane.items(), key=lambda kv: -kv[1])]
    view = WaitingRoomView(
        waiting=snap.waiting,
        size=room.size,
        upstreamAlive=snap.alive,
        upstreamLimit=snap.limit or None,
        limitLearned=snap.learned,
        etaPerPlaceSeconds=await room.eta(1),
        lanes=lanes,
        budget=BudgetView(maxRps=budget.max_rps, usedLastSecond=await budget.used_now(),
                          waitingHere=budget.waiting),
        busy=request.app[LOAD].busy_reason(),
    )
    return web.json_response(view.model_dump(mode="json"))
