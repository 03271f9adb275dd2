"""The tests: tiny real data written by the tests, in-process where a process is not the subject."""
