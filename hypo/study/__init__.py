"""The studies as library code: what a notebook imports.

``hypo.study`` sits above every other layer (cohort < preprocess < nets < cam < features <
stats < report < study); ``analyses/*.py`` are thin command lines over it.
"""
