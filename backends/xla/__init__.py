"""fxopt.backends.xla: ATen -> JAX lowering for the XLA backend (jax is the ``xla`` extra).

Importing this package imports nothing heavy. ``fxopt.backends.xla.lower`` (the API: ``lower_graph``,
``Lowered``, ``supported_ops``, ``unsupported_nodes``, ``to_jax``/``to_torch``, ``run_lowered``) and
``fxopt.backends.xla.ops`` (the rule table) import jax and turn on ``jax_enable_x64`` so int64 stays int64;
see docs/backends/xla-lowering.md.
"""
