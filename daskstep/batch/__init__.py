"""Batch systems (Slurm, HTCondor): site settings, worker and step jobs, the queue."""
