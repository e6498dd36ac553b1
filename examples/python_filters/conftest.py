pytest_plugins = ["fastgw.testing.plugin"]
