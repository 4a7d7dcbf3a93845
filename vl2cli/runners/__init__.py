"""Runners: how the files of a run reach a loaded model, beyond one local process.

`shards` splits a run over the tasks of a Slurm job array (one output part per shard); `ray_engine`
hands the model work of one run to a Ray Data actor pool. Both sit above `vl2cli.tasks` and reuse
its planning, batching and record code; neither has a copy of it.
"""
