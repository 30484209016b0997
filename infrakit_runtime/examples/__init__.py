"""Small programs to run as instances in demos and tests."""
