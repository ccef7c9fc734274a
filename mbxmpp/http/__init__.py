"""The daemon's HTTP side (aiohttp on the same loop): WebSocket, BOSH, upload, web chat, metrics."""
