"""Jobs: the job folder's format, executors that run workers, reconciliation. No torch here.

This package's ``__init__`` imports nothing on purpose: ``train/reporting.py`` (the writer of the job
folder) imports ``tuneforge.jobs.folder`` (its format) without pulling in executors.
"""
