"""Writing paired-image TFRecords: shard files written whole (``shards``), the synthetic set
(``synthetic``), the CSV converter (``convert``, with ``image_pass``: the parallel header survey
and decode/resize/encode pass, and ``slices``: one machine's slice and ``finalize``)."""
