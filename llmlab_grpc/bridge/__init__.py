"""The bridge role: the node's HTTP app (PWA, dashboard, JSON API) and the WebSocket to mobile nodes.

Public pieces: ``BridgeComponent`` (``node.components["bridge"]``: ``.http`` to add
routes, ``execute_on_mobile`` for routers), ``HttpServer`` and the wire helpers in
``protocol``. See docs/bridge.md.
"""
