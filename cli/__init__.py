"""The `e2y-visual` command line: a thin click front end over the library."""
