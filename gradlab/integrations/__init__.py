"""The recorder on top of other people's training code: run directories, reports, callbacks.

- :func:`save_run` / :func:`save_report`: from a :class:`~gradlab.recorder.GradientRecorder` to a
  run directory (that ``gradlab report`` and the diagnosis read) or straight to an HTML report,
  with the layer types and a description of the model captured from the model itself;
- :class:`RunSink`: the same, written as training goes (bounded memory, a run that dies keeps
  what it recorded);
- ``gradlab.integrations.lightning.GradlabCallback`` (extra ``lightning``) and
  ``gradlab.integrations.hf.GradlabTrainerCallback`` (extra ``hf``): one line to attach.

The framework modules are imported only when used, so this package needs neither.
"""

from gradlab.integrations.run import RunSink, describe_model, save_report, save_run

__all__ = ["RunSink", "describe_model", "save_report", "save_run"]
