"""The run, in orbit's shape: an outer loop that owns the schedule and the stop rules
(``controller``, pure Python) drives a train program and an eval program (``programs``) and
calls actions at its intervals (``actions``); ``modes`` holds the four things a user runs
(train, export, evaluate, continuous_eval) and maps errors to exit codes in one place."""
