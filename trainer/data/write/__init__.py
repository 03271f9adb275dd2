"""Writing paired-image TFRecords: shard files written whole (``shards``), the synthetic set
(``synthetic``), the CSV converter (``convert``, with ``pairs_csv``: the CSV's rows and the
check of every image it names, ``image_pass``: the parallel header survey and
decode/resize/encode pass, and ``slices``: one machine's slice and ``finalize``)."""
