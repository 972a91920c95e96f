"""posture's scanner stage: discovery agents, importers, the inventory store and the root command.

Nothing here imports `rules` or `reports`: later stages build on the inventory, never the other way.
"""

__version__ = "0.1.0"
