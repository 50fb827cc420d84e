"""Input/output: the sink that commits units, release building and its shard writers, download and verify."""
