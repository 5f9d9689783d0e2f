"""optkit serve / loadtest: an artifact behind KServe's Open Inference Protocol v2, with a dynamic batcher, and the load that measures it."""
