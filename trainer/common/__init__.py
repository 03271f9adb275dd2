"""Helpers every part of the package shares, each with one home here. Importing this package
(or ``errors``, ``net``, ``paths``) loads no TensorFlow, so the launcher and the flag parser
use them too; ``files`` imports TensorFlow when a function of it runs."""
