"""Diagnosis of stored runs: verdicts per layer and phase, collapse, and run comparisons.

Torch-free: it reads the tables of :mod:`gradlab.store`, so reports and diagnoses can be made
on a machine without torch.

Modules, from the tables up:

- :mod:`~gradlab.analysis.grids`: the long tables as (layer x step) grids and step series;
- :mod:`~gradlab.analysis.phases`: init, early and late as windows of steps, one phase's profile;
- :mod:`~gradlab.analysis.traits`: layer positions and what the network is made of, from the meta;
- :mod:`~gradlab.analysis.thresholds`: the numbers behind the verdicts;
- :mod:`~gradlab.analysis.profile`: the verdict of one depth profile, with its margin;
- :mod:`~gradlab.analysis.phase_stats`: non-finite steps, growth, saturation, clipping per phase;
- :mod:`~gradlab.analysis.suggestions`: what to try, as a table of rules;
- :mod:`~gradlab.analysis.text` and :mod:`~gradlab.analysis.wording`: the diagnosis as plain text, numbers in words;
- :mod:`~gradlab.analysis.diagnose`: one run's diagnosis (and every name above, re-exported);
- :mod:`~gradlab.analysis.collapse` and :mod:`~gradlab.analysis.comparison`: collapse findings and
  the verdict of a comparison of runs.
"""
