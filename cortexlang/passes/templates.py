"""Pass 6: prompt templates. Jinja2 syntax errors are errors; unknown variables are warnings.

A template may use the workflow's inputs, its ``vars``, the names of its stages
and fan-outs (their results), and the runtime's builtins
(:data:`cortexlang.ir.TEMPLATE_BUILTINS`). Anything else renders empty at run
time, which is almost always a typo, so it is reported (CX602).
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from cortexlang import ir
from cortexlang.diagnostics import DiagnosticCollector, Span, did_you_mean

_ENV = SandboxedEnvironment()


@lru_cache(maxsize=1024)
def _variables(template: str) -> frozenset[str]:
    """The template's free variables; raises TemplateSyntaxError. Cached: prompts repeat."""
    return frozenset(meta.find_undeclared_variables(_ENV.parse(template)))


def check_templates(wf: ir.Workflow, spans: dict[str, Span], diags: DiagnosticCollector) -> None:
    """``spans`` maps ``stage`` and ``stage.system`` to the span of the attribute's value."""
    known = set(wf.inputs) | set(wf.vars) | {s.name for s in wf.stages} | {f.name for f in wf.fanouts}
    known |= set(ir.TEMPLATE_BUILTINS)
    for stage in wf.stages:
        if stage.kind == "llm":
            templates = ((stage.name, stage.prompt.template, stage.prompt.path),
                         (f"{stage.name}.system", stage.prompt.system, None))
        elif stage.kind == "tool":  # named arguments are templates too
            templates = tuple((f"{stage.name}.args", t, None) for t in stage.args.values())
        else:
            continue
        for key, template, path in templates:
            if template is None:
                continue
            span = spans.get(key)
            where = f"`{path}`" if path else "the template"
            try:
                variables = _variables(template)
            except TemplateSyntaxError as exc:
                diags.error("CX601", f"jinja2 error in {where}, line {exc.lineno}: {exc.message}", span)
                continue
            except RecursionError:  # jinja2's parser recurses once per nesting level
                diags.error("CX601", f"jinja2 error in {where}: expressions nest too deeply", span)
                continue
            for var in sorted(variables - known):
                diags.warning("CX602", f"{where} of `{stage.name}` uses `{var}`, which is not an input, a var or "
                              "a stage", span, hint=did_you_mean(var, known)
                              or f"declare it: `inputs = [{var}]` or `vars {{ {var} = \"...\" }}`")
