"""`amgan-search serve`: the index and the models loaded once, behind a JSON API and a web page."""

from __future__ import annotations

import click


@click.command()
@click.option("--index", "index_dir", type=click.Path(file_okay=False), default=None,
              help="Index folder [default: the demo's, $AMGAN_SEARCH_HOME/index/default].")
@click.option("--methods", default=None, metavar="SPEC",
              help="The methods a query may name, comma-separated: amgan, stargan, adde, hybrid, "
                   "prototype, real, a model folder, NAME=DIR or NAME=GAN+ADDE "
                   "[default: amgan]. Every one is loaded at start.")
@click.option("--default", "default", default=None, metavar="NAME",
              help="The method a query that names none gets [default: the first of --methods].")
@click.option("--model", type=click.Path(file_okay=False), default=None,
              help="A GAN folder (AMGAN or a baseline) to edit with: the same as --methods DIR.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback lets other machines query.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: a free one, printed at start).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch threads for the models [default: the project's thread policy].")
@click.option("--no-compile", is_flag=True,
              help="Skip torch.compile at start: ready in seconds, queries slower.")
@click.option("--batch-wait-ms", type=click.FloatRange(0, 1000), default=5.0, show_default=True,
              help="How long a batch waits for more concurrent requests.")
@click.option("--max-batch", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Most queries run through the models together (1: no batching).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Batches run at once, each on --threads threads [default: one per core "
                   "the threads leave, at most 4].")
def serve(index_dir, methods, default, model, host, port, threads, no_compile, batch_wait_ms,
          max_batch, workers) -> None:
    """Serve the search: a JSON API (/api/..., OpenAPI page at /docs) and a web page at /; each
    query answered by the method it names among --methods."""
    from amgan_search.index.index_dir import default_or_given
    from amgan_search.index.serve.app import serve as run_server

    if methods is not None and model is not None:
        raise click.UsageError("--methods and --model both name what answers; give one")
    run_server(default_or_given(index_dir), model=model, host=host, port=port, threads=threads,
               compile=not no_compile, wait_ms=batch_wait_ms, max_batch=max_batch, workers=workers,
               log=lambda line: click.echo(line, err=True), methods=methods, default=default)
