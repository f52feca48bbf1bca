"""What each block may contain: the language's structure as data.

The grammar accepts any ``TYPE [LABEL] { ... }``; this table says which block
types exist where, whether they take a label, which attributes they accept, how
each attribute's value converts (see :mod:`cortexlang.passes.values`) and which
are required. The structure pass walks it; documentation can be generated from
it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cortexlang.ir import MAX_OUTPUT_CV
from cortexlang.passes import values as v


@dataclass(frozen=True)
class Attr:
    convert: v.Converter
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class BlockSchema:
    type: str
    labelled: bool
    attrs: dict[str, Attr] = field(default_factory=dict)
    blocks: dict[str, "BlockSchema"] = field(default_factory=dict)
    repeatable: bool = True  # may appear more than once among its siblings
    has_flow: bool = False
    doc: str = ""


CACHE = BlockSchema("cache", labelled=False, repeatable=False, doc="agentic-state cache for results", attrs={
    "ttl": Attr(v.duration, doc="time to live"),
    "scope": Attr(v.enum("run", "workflow", "global"), doc="who shares entries"),
    "max_entries": Attr(v.integer(1), doc="size bound (LRU)"),
    "enabled": Attr(v.boolean),
})

_COMMON_STAGE = {
    "budget": Attr(v.duration, doc="per-stage latency budget"),
    "prewarm": Attr(v.boolean, doc="speculatively warm this stage"),
    "repeat": Attr(v.int_knob(1, 100), doc="run the stage this many times in a row (a knob), then go on"),
}

RETRY = BlockSchema("retry", labelled=False, repeatable=False, doc="retries of a failed tool call", attrs={
    "max": Attr(v.integer(1, 100), required=True, doc="retries after the first attempt"),
    "backoff": Attr(v.duration, doc="wait before the first retry, doubled before each next one"),
})

ARGS = BlockSchema("args", labelled=False, repeatable=False,
                   doc="named arguments of a tool call: jinja2 templates over the run's context")

CONSTRAIN = BlockSchema("constrain", labelled=False, repeatable=False,
                       doc="structured output: exactly one constraint the engine enforces while decoding", attrs={
    "json": Attr(v.text_or_file, doc="a JSON schema, inline or file(...)"),
    "regex": Attr(v.text, doc="a regular expression the whole output matches"),
    "grammar": Attr(v.text_or_file, doc="an EBNF (GBNF) grammar, inline or file(...)"),
    "sql": Attr(v.name, doc="a database: one read-only SELECT over its tables and columns"),
})

LLM = BlockSchema("llm", labelled=True, doc="a language-model call", attrs={
    "model": Attr(v.model_choice, required=True, doc="a model, or a malleable choice of models"),
    "prompt": Attr(v.text_or_file, required=True, doc="jinja2 template, inline or file(...)"),
    "system": Attr(v.text_or_file, doc="system message template"),
    "max_tokens": Attr(v.int_knob(1), required=True),
    "temperature": Attr(v.number(0.0, 2.0)),
    "top_p": Attr(v.number(0.0, 1.0, lo_open=True)),
    "stop": Attr(v.string_list),
    "output": Attr(v.enum("text", "json")),
    "input_tokens": Attr(v.integer(1), required=True, doc="expected prompt tokens"),
    "output_tokens": Attr(v.integer(1), required=True, doc="expected output tokens"),
    "prefix_tokens": Attr(v.integer(0), doc="prompt tokens shared by every call"),
    "output_cv": Attr(v.number(0.0, MAX_OUTPUT_CV), doc="coefficient of variation of the output length of calls "
                      "that stop on their own (default 0.3; learnt from traces by `cortexc plan --observed`)"),
    "runaway": Attr(v.number(0.0, 1.0), doc="share of calls that never stop and run to max_tokens "
                    "(learnt from traces by `cortexc plan --observed`)"),
    "output_correlation": Attr(v.number(0.0, 1.0), doc="how alike the output lengths of one run's calls are "
                               "(0: independent; learnt from traces by `cortexc plan --observed`)"),
    "hedge": Attr(v.int_knob(1, 16), doc="parallel candidates per call"),
    "pool": Attr(v.name, doc="share one pool of replicas with the other stages naming this pool"),
    **_COMMON_STAGE,
}, blocks={"constrain": CONSTRAIN})

SQL = BlockSchema("sql", labelled=True, doc="a read-only statement on a database", attrs={
    "database": Attr(v.name, required=True),
    "query": Attr(v.name, doc="stage whose output is the statement (default: the stage that led here)"),
    "service": Attr(v.duration_or_range, doc="expected service time, or a range like 50ms..400ms"),
    "service_cv": Attr(v.number(0.0)),
    **_COMMON_STAGE,
}, blocks={"cache": CACHE})

TOOL = BlockSchema("tool", labelled=True, doc="a Python function call", attrs={
    "entry": Attr(v.entry_point, required=True, doc='"module:function"'),
    "service": Attr(v.duration_or_range, required=True, doc="expected service time, or a range like 50ms..400ms"),
    "service_cv": Attr(v.number(0.0)),
    **_COMMON_STAGE,
}, blocks={"cache": CACHE, "retry": RETRY, "args": ARGS})

FANOUT = BlockSchema("fanout", labelled=True, has_flow=True, doc="parallel branches and a join", attrs={
    "branches": Attr(v.name_list, doc="one stage per branch"),
    "each": Attr(v.name_list, doc="a chain of stages run `width` times"),
    "width": Attr(v.int_knob(1, 1024), doc="branches per visit (a knob); for a map, a cap"),
    "over": Attr(v.list_source, doc="a map: one branch per item of a stage field's list, or per branch of a fan-out"),
    "widths": Attr(v.width_distribution, doc="a map's planning distribution of widths"),
    "join": Attr(v.enum("all", "first", "vote", "best")),
})

SLO = BlockSchema("slo", labelled=False, repeatable=False, attrs={
    "latency": Attr(v.duration, required=True, doc="end-to-end deadline"),
    "attainment": Attr(v.percent, required=True, doc="fraction of runs that must meet it"),
})

LOAD = BlockSchema("load", labelled=False, repeatable=False, attrs={
    "rate": Attr(v.rate, required=True),
    "pattern": Attr(v.enum("poisson", "bursty", "constant")),
    "burstiness": Attr(v.number(0.0, lo_open=True), doc="inter-arrival coefficient of variation"),
})

AUTOSCALE_POOL = BlockSchema("pool", labelled=True, doc="one LLM pool's limits (a stage or `pool =` name)", attrs={
    "replicas": Attr(v.int_range(1, 1024), required=True, doc="`2..6`: at least 2, at most 6 replicas"),
})

AUTOSCALE = BlockSchema("autoscale", labelled=False, repeatable=False,
                        doc="the live monitor's limits (cortex serve; --autoscale overrides them)", attrs={
    "replicas": Attr(v.int_range(1, 1024), doc="`1..4` per LLM pool (default), or one number"),
    "budget": Attr(v.money_per_hour, doc="the most all LLM replicas may cost per hour"),
}, blocks={"pool": AUTOSCALE_POOL})

VARS = BlockSchema("vars", labelled=False, repeatable=False, doc="constants for prompt templates")

WORKFLOW = BlockSchema("workflow", labelled=True, has_flow=True, attrs={
    "inputs": Attr(v.name_list, doc="names of the run's inputs"),
}, blocks={"llm": LLM, "sql": SQL, "tool": TOOL, "fanout": FANOUT, "slo": SLO, "load": LOAD, "vars": VARS,
            "autoscale": AUTOSCALE})

MODEL = BlockSchema("model", labelled=True, attrs={
    "weights": Attr(v.text, required=True, doc="local path, model id, or package:NAME"),
    "params": Attr(v.count, required=True),
    "max_context": Attr(v.integer(1), required=True),
    "kv_bytes_per_token": Attr(v.size),
    "layers": Attr(v.integer(1)),
    "kv_heads": Attr(v.integer(1)),
    "head_dim": Attr(v.integer(1)),
    "dtype": Attr(v.enum("float32", "bfloat16", "float16")),
    "profile": Attr(v.text),
})

GPU = BlockSchema("gpu", labelled=True, attrs={
    "count": Attr(v.integer(0), required=True),
    "cost": Attr(v.money_per_hour, required=True),
    "memory": Attr(v.size),
})

CPU = BlockSchema("cpu", labelled=False, repeatable=False, attrs={
    "slots": Attr(v.integer(0), required=True),
    "cost": Attr(v.money_per_hour),
})

RESOURCES = BlockSchema("resources", labelled=False, repeatable=False, blocks={"gpu": GPU, "cpu": CPU})

DATABASE = BlockSchema("database", labelled=True, attrs={
    "url": Attr(v.text, required=True, doc="SQLAlchemy URL"),
    "access": Attr(v.enum("read_only")),
    "timeout": Attr(v.duration),
    "row_limit": Attr(v.integer(1)),
    "max_result_bytes": Attr(v.size, doc="results are cut at this size (rows bound them too)"),
    "pool": Attr(v.integer(1)),
})

FILE = BlockSchema("file", labelled=False, blocks={
    "model": MODEL, "database": DATABASE, "resources": RESOURCES, "workflow": WORKFLOW,
})

STAGE_TYPES = ("llm", "sql", "tool")
NODE_TYPES = STAGE_TYPES + ("fanout",)
