"""The studies as library code: what a notebook imports and an analysis command line runs."""
