"""Retrieval over a catalog (installed as amgan_search.index); imports the core, never the CLI.

In the order a catalog and then a query pass through it:
  embed         the CNN+CAM classifier's features as L2-normalised vectors (`Embedder`, `load_embedder`)
  faiss_index   index type, parameters, training and tuning against exact search
  index_dir     the index folder's files: write, read, check, describe
  build         catalog -> index folder (`build_index`, `add_items`, the sharded torchrun build)
  search        a loaded index: top-k rows, `where` filter, metadata (`Searcher`)
  retrieve      the query pipeline: photo -> edit -> embed -> search (`Retriever`, `QueryResult`)
  sheet         a query's contact sheet
  demo          the whole pipeline on the shipped models, to an HTML report
  serve/        `amgan-search serve` and its client (the HTTP side of the query pipeline)
  evaluate/     the paper's protocol: the benchmark runner, its methods and report, the comparison
serve/ and evaluate/ sit above the modules here and never import each other (import-linter).
"""
