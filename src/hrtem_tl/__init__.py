"""Transfer learning for HRTEM segmentation: simulated data, U-Net training and studies.

Layers import downwards only::

    config -> lattices -> structures -> simulate -> datasets
           -> model -> metrics -> train -> results -> study -> explore -> cli

``writers`` (temporary names, the results lock) sits below them all.
"""

__version__ = "0.1.0"
