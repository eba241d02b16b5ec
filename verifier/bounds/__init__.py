"""Bound propagation: interval (IBP), back-substitution (CROWN) and optimised slopes (alpha)."""
