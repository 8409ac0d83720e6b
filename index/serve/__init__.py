"""`amgan-search serve` and `query --server`: the query pipeline behind HTTP.

  batch_query   the query pipeline over a batch of queries, each answered as alone
  batching      micro-batching: worker threads over the queries that queued up together
  service       what `serve` holds and answers, apart from HTTP
  answers       the JSON API's answers as pydantic models (the OpenAPI page shows them)
  app           the FastAPI app of `serve` (JSON API, the page in web/)
  client        `query --server URL`: a running server's answer, without torch
"""
