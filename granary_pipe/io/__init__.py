"""Input/output: audio decode, Parquet and WebDataset shard writers, release building."""
