"""The planner: turn a query into steps, route each to a capable node, keep the trace."""
