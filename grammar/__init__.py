"""Ships the Cortex grammar (``cortex.lark``) inside the wheel."""

from pathlib import Path

GRAMMAR_PATH = Path(__file__).with_name("cortex.lark")
