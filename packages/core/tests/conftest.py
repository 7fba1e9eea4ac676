pytest_plugins = ("robust.testing",)
