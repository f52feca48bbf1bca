"""cortexlang: the Cortex workflow language front end (syntax -> passes -> IR) and CLIs.

Importing this package stays cheap and imports no parser: consumers of the IR
(``planner``, ``runtime``) import ``cortexlang.ir`` only.
"""

__version__ = "0.1.0"
