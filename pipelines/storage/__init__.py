"""Where outputs land: pyarrow filesystems for local paths and object-store URIs, run-date partitions published
atomically, the Arrow types of a model's columns and single Parquet files written atomically."""
