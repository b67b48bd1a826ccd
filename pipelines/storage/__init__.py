"""Where outputs land: pyarrow filesystems for local paths and object-store URIs, the scores as an Iceberg table
(`scores_table`), the Arrow types of a model's columns and single Parquet files written atomically."""
