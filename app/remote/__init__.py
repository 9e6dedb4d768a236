"""Rendering on another machine: the render server (Ray Serve) and its client. ``protocol`` and
``client`` need only ``websockets``; the server modules need ``requirements-server.txt``."""
