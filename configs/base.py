"""The defaults of every lrm run live in the package (lrm/jobs/defaults.py); this file is their
name among the experiment configs, so `--config=configs/base.py[:runlocal]` (or `--config=base`)
and `load_config(here / "base.py", ...)` in the other configs keep working.

  lrm run                                          # the main job on the synthetic world
  lrm run --config=configs/base.py:runlocal        # a smaller world, for a quick look
"""

from lrm.jobs.defaults import get_config

__all__ = ["get_config"]
