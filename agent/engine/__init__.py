"""The engine: traffic control and (later) the decision pipeline. Imports no aiohttp, grpc or sqlite."""
