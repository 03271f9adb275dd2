"""The launcher: starts trainer processes locally (``launch local``) or on Kubernetes
(``launch k8s``). It never imports the trainer's model or training loop."""
