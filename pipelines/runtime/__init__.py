"""The Ray side of the pipelines: starting or joining Ray, Parquet rows read, checked, split and encoded with
Ray Data, the Ray Train worker loop and the trainer that runs it, and the Ray Data scoring actors."""
