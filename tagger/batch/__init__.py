"""`tagger batch`: the single-machine pipeline's stages run on Ray Data for catalogues beyond one machine.

``stages`` (decode -> fixed-shape windows; inference -> aggregation, from the engine's own pieces), ``manifest``
(what to analyse), ``job`` (the Ray Data pipeline), ``results`` (incremental Parquet parts, resumable),
``index`` (an approximate nearest-neighbour index over the embeddings, with exact re-ranking), ``importer``
(results into a library database). Needs the ``batch`` extra (ray[data], pyarrow, faiss-cpu); the rest of the
runtime does not import it.
"""
