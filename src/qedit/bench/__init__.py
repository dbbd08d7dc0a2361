"""``qedit bench``: qedit's engine and diffusers' reference pipeline, side by side in one process.

A speed claim only holds if it is measured against the reference on the same weights, inputs and
machine, with the output shown to be the same edit; so the bench builds diffusers' own pipeline
from qedit's loaded components (``reference``), runs both interleaved on one synthetic image
(``inputs``), measures each run the same way from the outside (``probes``: transformer hooks,
peak memory, weight bytes), and prints the ratios next to each other (``runner``, ``report``).
"""
