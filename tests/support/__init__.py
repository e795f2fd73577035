"""Support for the tests: real servers and processes that the tests run against."""
