"""The data the project ships (`thyroid.npz`, README.md) and its loaders (`datasets`)."""
