"""The launcher: starts trainer processes locally (``launch local``) or on Kubernetes
(``launch k8s``), both after the Cloud Storage checks of ``launch.preflight``. It never imports
the trainer's model or training loop."""
