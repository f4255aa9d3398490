"""Roles and the boundary: the client and server objects, the messages and transports between
them, the client weighting rules of the round-end average (``aggregation``), and the training
methods with what each shares of the server segment (``strategies``).
"""
