"""ColorFlow's resource files (model configs, presets), installed as the package `colorflow_resources`."""
