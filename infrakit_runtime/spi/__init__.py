"""Contracts only: wire types and Protocols, no I/O.

Every other package imports ``spi``; ``spi`` imports nothing of ours but itself.
"""
