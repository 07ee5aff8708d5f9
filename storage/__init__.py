"""Waymark storage package."""
