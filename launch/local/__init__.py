"""``launch local``: N trainer worker processes on loopback (``workers``), their tf.data
service (``data_service``) and the process helpers both use (``processes``)."""
