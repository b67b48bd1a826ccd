"""Everything MLflow: tracked runs, the registry, the "model from code" pyfunc logged with each model, the figures
logged with runs, and the score statistics a model carries for drift checks. No other package imports mlflow."""
