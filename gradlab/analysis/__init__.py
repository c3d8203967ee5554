"""Diagnosis of stored runs: verdicts per layer and phase, collapse, and run comparisons.

Torch-free: it reads the tables of :mod:`gradlab.store`, so reports and diagnoses can be made
on a machine without torch.
"""
