"""Reports rendered from run results and the registry.

* :mod:`.table`: the recall table printed at the end of every run.
* :mod:`.runs` reads finished test runs and sweep trials back from the registry; :mod:`.leaderboard` groups
  them into comparable tables (one per test-split fingerprint, non-compliant runs apart) and
  :mod:`.compare` runs the paired tests against the best; :mod:`.published` loads ``published.yaml`` and
  checks every printed mR; :mod:`.studies` summarises sweeps; :mod:`.ablation` tables an ablation study's rows
  against its full method; :mod:`.plots` draws the figures.
* :mod:`.model` builds one :class:`~.model.Report` that every ``render_*`` module prints, so the formats
  cannot disagree; :mod:`.output` writes them.
"""
