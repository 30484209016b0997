"""Tests for the group planner (pure: no daemons, no clocks)."""
