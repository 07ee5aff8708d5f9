"""Waymark bot package."""
