"""The test kit's fixtures (robust.testing): a per-session data root, register_plugin, one_thread."""

pytest_plugins = ("robust.testing",)
