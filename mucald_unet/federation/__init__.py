"""Roles and the boundary: the client and server objects, the messages and transports between
them, and the aggregation strategies the server applies at each round's end.
"""
