"""The commands of `vae-anomaly` (`python -m pipelines <command>`), one module each, each a thin recipe: load the
config, call the library and the runtime, log. `pipelines.cli` maps each command name to its module."""
