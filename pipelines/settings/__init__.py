"""Configuration: the YAML config classes of every command, loaded with `key.sub=value` overrides and validated
before Ray starts, and a sweep's search space as data."""
