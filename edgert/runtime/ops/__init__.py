"""Device-neutral op semantics: the attribute and shape logic that the CPU and CUDA kernels of an
op share (validation, output shapes, window geometry). Kernels compute; this package decides what
they compute. It imports no kernel module and nothing device-specific."""
