"""ib_resilience: keeps synchronous Interactive Brokers bots connected and their orders safe."""

__version__ = "0.1.0"
