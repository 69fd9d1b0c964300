"""The analysts' side."""
