"""The HTTP protocol layer: the seed's API, the Open Inference Protocol v2, docs, over `runtime.service`."""
