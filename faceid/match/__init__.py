"""Matching and deciding: scores, the similarity head (NumPy), the saved decision, the gallery and its search."""
