"""Reusable widgets: cards, page headers, path fields, badges, the matplotlib canvas."""
