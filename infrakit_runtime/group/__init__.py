"""The group controller: a pure planner (spec, hashing, plan) and the supervisor loop that acts on it."""
