"""``launch k8s``: manifests rendered from the kustomize base (``manifests``), the JobSet
controller (``jobset``), the side-car evaluator (``evaluator``), the tf.data service
(``data_service``), converter Jobs (``convert``), the status screen (``status``) and the
command line (``cli``)."""
