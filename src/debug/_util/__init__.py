"""Private helpers shared across the package: atomic files and run folders, plain-JSON copies, figures.

Nothing here is public API; each helper exists once and is imported from its module here.
"""
