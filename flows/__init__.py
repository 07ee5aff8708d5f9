"""Waymark flows package."""
