"""The runtime a run executes in: the tf.distribute strategy (``strategy``), the cluster and
TF_CONFIG (``cluster``, pure; shared with ``launch``), the peers' TCP meeting (``rendezvous``),
TensorFlow's thread pools (``threads``), glibc's malloc thresholds (``memory``) and Cloud
Storage (``storage``).

Nothing here knows the model or the training loop."""
