"""Retrieval over a catalog (installed as amgan_search.index); imports the core, never the CLI.

In the order a catalog and then a query pass through it:
  embed         the CNN+CAM classifier's features as L2-normalised vectors (`Embedder`, `load_embedder`)
  faiss_index   index type, parameters, training and tuning against exact search
  index_dir     the index folder's files: write, read, check, describe
  build         catalog -> index folder (`build_index`, `add_items`, the sharded torchrun build)
  search        a loaded index: top-k rows, `where` filter, metadata (`Searcher`)
  retrieve      the query pipeline: photo -> edit -> embed -> search (`Retriever`, `QueryResult`)
  sheet         a query's contact sheet
  benchmark     the resumable retrieval benchmark runner; methods: real, oracle and the
                generators it runs; report: its summary.json, .md and plot
  compare_models, compare_run, comparison
                the paper's whole comparison: the methods' models at one iteration, their
                benchmark and edits, the table with 95% intervals (`amgan-search compare`)
  demo          the whole pipeline on the shipped models, to an HTML report
  batch_query   the query pipeline over a batch of queries, each answered as alone
  batching      micro-batching: worker threads over the queries that queued up together
  service       what `serve` holds and answers, apart from HTTP
  server        the FastAPI app of `serve` (JSON API, the page in web/)
  client        `query --server URL`: a running server's answer, without torch
"""
