#!/usr/bin/env python3
"""Renders the chat templates in tests/golden/chat_templates/ with Python's jinja2, set up
as Hugging Face transformers sets it up for apply_chat_template (and so vLLM), over a fixed
set of conversations with and without tools. Writes tests/golden/chat_templates.json, which
tests/server/test_jinja_golden.cc renders with tokenmill's interpreter and compares byte
for byte.

    .venv/bin/python scripts/golden_chat_templates.py          # rewrite the golden file
    .venv/bin/python scripts/golden_chat_templates.py --check  # exit 1 if it would change

A render that raises is recorded as an error (its message when raise_exception raised it).
"""
import datetime
import json
import pathlib
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "tests" / "golden" / "chat_templates"
OUT = ROOT / "tests" / "golden" / "chat_templates.json"

# strftime_now renders this instant (UTC) in the golden file; the test passes the same.
NOW = datetime.datetime(2024, 7, 26, 13, 5, 9, tzinfo=datetime.timezone.utc)

# Special tokens each family's tokenizer defines (what the template sees as bos_token ...).
SPECIAL = {
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
    "qwen2.5": {"bos_token": None, "eos_token": "<|im_end|>"},
    "qwen3": {"bos_token": None, "eos_token": "<|im_end|>"},
    "llama3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral-nemo": {"bos_token": "<s>", "eos_token": "</s>"},
    "gemma3": {"bos_token": "<bos>", "eos_token": "<eos>"},
    "phi3.5": {"bos_token": "<s>", "eos_token": "<|endoftext|>"},
    "hermes2pro": {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>"},
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web; returns the top results.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 10},
                "safe": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["query"],
        },
    },
}
CALL = {"id": "abc123xyz", "type": "function",
        "function": {"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}}

# What a template receives: messages as vLLM builds them from a request (content as a
# string, tool call arguments parsed into objects), tools as vLLM dumps them.
CONVERSATIONS = {
    "single": {"messages": [{"role": "user", "content": "Hello!"}], "add_generation_prompt": True},
    "system": {"messages": [{"role": "system", "content": "You are terse."},
                            {"role": "user", "content": "What is 2+2?"}],
               "add_generation_prompt": True},
    "multi_turn": {"messages": [{"role": "system", "content": "Answer in French."},
                                {"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Bonjour !"},
                                {"role": "user", "content": "How are you?"}],
                   "add_generation_prompt": True},
    "no_generation_prompt": {"messages": [{"role": "user", "content": "Q"},
                                          {"role": "assistant", "content": "A"}],
                             "add_generation_prompt": False},
    "text_edges": {"messages": [{"role": "user", "content": "  h\u00e9llo \u4e16\u754c \U0001F642\n\t'quotes' \"and\" \\ back  \n"}],
                   "add_generation_prompt": True},
    "tools": {"messages": [{"role": "user", "content": "What's the weather in Paris?"}],
              "tools": [WEATHER, SEARCH], "add_generation_prompt": True},
    "tools_system": {"messages": [{"role": "system", "content": "Use tools when needed."},
                                  {"role": "user", "content": "Weather in Paris?"}],
                     "tools": [WEATHER], "add_generation_prompt": True},
    "tool_history": {"messages": [{"role": "user", "content": "Weather in Paris?"},
                                  {"role": "assistant", "content": "", "tool_calls": [CALL]},
                                  {"role": "tool", "content": "{\"temperature\": 22, \"sky\": \"clear\"}",
                                   "tool_call_id": "abc123xyz"}],
                     "tools": [WEATHER], "add_generation_prompt": True},
    "tool_history_then_answer": {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Weather in Paris?"},
                     {"role": "assistant", "content": "", "tool_calls": [CALL]},
                     {"role": "tool", "content": "22 C", "tool_call_id": "abc123xyz"},
                     {"role": "assistant", "content": "It is 22 C and clear."},
                     {"role": "user", "content": "Thanks"}],
        "tools": [WEATHER], "add_generation_prompt": True},
    "thinking": {"messages": [{"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
                              {"role": "user", "content": "3+3?"}],
                 "add_generation_prompt": True, "enable_thinking": False},
    "roles_not_alternating": {"messages": [{"role": "user", "content": "a"},
                                           {"role": "user", "content": "b"}],
                              "add_generation_prompt": True},
}


# Small templates, one feature each, rendered with VARS: the interpreter's behaviour where the
# model templates above do not reach (filters, tests, scoping, whitespace control, errors).
VARS = {"s": "  Hello, World  ", "n": 7, "f": 2.5, "xs": [3, 1, 2], "none": None, "t": True,
        "d": {"b": 1, "a": [1, 2], "c": {"k": "v"}}, "u": "h\u00e9llo \u4e16\u754c",
        "people": [{"name": "ann", "age": 31, "role": "user"}, {"name": "Bob", "age": 25},
                   {"name": "cy", "age": 31, "role": "assistant"}],
        "msgs": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
                 {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}],
        "big": 9007199254740993, "neg": -13, "e": "", "el": [], "ed": {}}
SNIPPETS = [
    # output of values: Python's str() and repr()
    "{{ 1 }}|{{ -0.0 }}|{{ 1.5e300 }}|{{ 1e16 }}|{{ 1e15 }}|{{ 0.0001 }}|{{ 1e-05 }}|{{ 1/3 }}|{{ 2**62 }}",
    "{{ none }}|{{ t }}|{{ xs }}|{{ d }}|{{ (1,) }}|{{ (1, 'a') }}|{{ [] }}|{{ {} }}|{{ ['it\\'s', \"q\\\"\", 'a\\nb'] }}",
    "{{ undefined_name }}|{{ d.missing }}|{{ d['missing'] }}|{{ xs[10] }}|{{ none.x }}",
    "{{ [u, 'tab\\t', '\\x01', '\\u00a0', '\\u2028'] }}",
    "{{ 'a' ~ 1 ~ none ~ 2.0 ~ t ~ xs }}",
    # arithmetic and comparison
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "{{ 1 + 2 * 3 - 4 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ 'ab' * 3 }} {{ [1] * 3 }} {{ 3 * 'x' }}",
    "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ t == 1 }} {{ none == none }} {{ xs == [3, 1, 2] }} {{ (1, 2) == [1, 2] }}",
    "{{ 'ell' in s }} {{ 2 in xs }} {{ 'a' in d }} {{ 'z' not in d }} {{ 5 not in xs }} {{ not t }} {{ not none }}",
    "{{ t and 'yes' }}|{{ none or 'fallback' }}|{{ 0 or '' }}|{{ xs and xs[0] }}|{{ 'x' if t }}|{{ 'x' if none }}|{{ 'a' if none else 'b' if t else 'c' }}",
    "{{ big + 1 }} {{ neg * 3 }} {{ 10 - 2.5 }}",
    # strings
    "[{{ s|trim }}][{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}][{{ 'xxhixx'.strip('x') }}][{{ s|trim('H ') }}]",
    "{{ s.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a b c d'.split(' ', 2) }} {{ 'a,b,c'.rsplit(',', 1) }} {{ '  a  b '.rsplit() }}",
    "{{ 'l1\\nl2\\r\\nl3\\n'.splitlines() }} {{ u|length }} {{ u[1] }} {{ u[-2:] }} {{ u[::-1] }} {{ u[1:8:2] }} {{ xs[::-1] }} {{ xs[1:] }} {{ xs[:-1] }}",
    "{{ s.startswith('  He') }} {{ s.endswith(('x', '  ')) }} {{ 'abc'.upper() }} {{ 'ABC'.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}",
    "{{ 'aaa'.replace('a', 'b', 2) }} {{ 'abc'.replace('', '-') }} {{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.find('z') }} {{ 'banana'.count('an') }} {{ ', '.join(['a', 'b']) }}",
    "{{ '123'.isdigit() }} {{ 'ab1'.isalpha() }} {{ 'abc'.islower() }} {{ ' \\t'.isspace() }} {{ 'prefix_x'.removeprefix('prefix_') }} {{ 'x.txt'.removesuffix('.txt') }}",
    # filters
    "{{ s|upper }}|{{ s|lower }}|{{ 'ab cd'|title }}|{{ 'ab CD'|capitalize }}|{{ xs|length }}|{{ d|count }}|{{ 5|string }}|{{ none|string }}",
    "{{ xs|first }} {{ xs|last }} {{ 'abc'|first }} {{ xs|join('-') }} {{ people|join(', ', attribute='name') }} {{ xs|sort }} {{ xs|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }}",
    "{{ people|sort(attribute='age')|map(attribute='name')|list }} {{ people|selectattr('role')|map(attribute='name')|join(',') }} {{ people|rejectattr('role')|list }} {{ people|selectattr('age', 'equalto', 31)|list|length }} {{ people|map(attribute='role', default='none')|list }}",
    "{{ xs|select('odd')|list }} {{ xs|reject('odd')|list }} {{ [0, 1, '', 'a', none]|select|list }} {{ xs|map('string')|list }} {{ ['a', 'b']|map('upper')|join }} {{ xs|select('greaterthan', 1)|list }}",
    "{{ d|items|list }} {{ d.items()|list }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.get('b') }} {{ d.get('z', 'dflt') }} {{ d.get('z') }} {{ d|dictsort }} {{ {'b': 2, 'a': 1}|dictsort(by='value', reverse=true) }}",
    "{{ undefined_name|default('dflt') }} {{ e|default('empty', true) }} {{ e|d('x') }} {{ none|default('n') }} {{ xs|unique|list }} {{ ['a', 'A', 'b']|unique|list }} {{ [3, 1, 3]|unique|list }}",
    "{{ xs|min }} {{ xs|max }} {{ ['b', 'A']|max }} {{ people|max(attribute='age') }} {{ xs|sum }} {{ people|sum(attribute='age') }} {{ [1.5, 2]|sum }} {{ xs|reverse|list }} {{ 'abc'|reverse }}",
    "{{ '3'|int }} {{ '3.7'|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ 3.9|int }} {{ '1_000'|int }} {{ ' 42 '|int }} {{ '2.5'|float }} {{ 'nan'|float }} {{ 'x'|float }} {{ t|int }}",
    "{{ -3|abs }} {{ (-3)|abs }} {{ -2.5|abs }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 7|round }}",
    "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}|{{ 'x'|indent('>>', first=true) }}",
    "{{ '<a href=\"x\">&\\'</a>'|e }} {{ 'abc'|center(9) }}|{{ 'ab'|center(7) }}| {{ 'one two  three'|wordcount }} {{ xs|batch(2)|list }} {{ d|attr('items') is callable }}",
    "{{ d|tojson }} {{ u|tojson }} {{ [1.0, 1e20, none, t, 'q\"\\\\']|tojson }} {{ d|tojson(indent=2) }} {{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }} {{ u|tojson(ensure_ascii=true) }} {{ {1: 2, none: t}|tojson }} {{ (1, 2)|tojson }}",
    # tests
    "{{ xs is iterable }} {{ s is iterable }} {{ n is iterable }} {{ d is mapping }} {{ xs is mapping }} {{ xs is sequence }} {{ n is number }} {{ t is number }} {{ t is integer }} {{ n is integer }} {{ f is float }} {{ t is boolean }} {{ t is true }} {{ none is false }}",
    "{{ undefined_name is defined }} {{ undefined_name is undefined }} {{ none is none }} {{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 2 is in xs }} {{ n is eq 7 }} {{ n is ne 7 }} {{ n is gt 3 }} {{ n is le 3 }} {{ none is sameas none }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ range is callable }}",
    "{{ 'x' is string }} {{ 1 is string }} {{ n is not none }} {{ (n is defined) and (xs is defined) }}",
    # statements and scoping
    "{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.cycle('a', 'b') }};{% endfor %}",
    "{% for x in xs if x > 1 %}{{ loop.index }}:{{ x }},{% else %}none{% endfor %}|{% for x in el %}{{ x }}{% else %}empty{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in d %}{{ k }}{% endfor %}|{% for c in 'ab' %}{{ c }}.{% endfor %}",
    "{% for x in xs %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}|{% for a in [1, 2] %}{% for b in [3, 4] %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }}|{% endfor %}",
    "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }};{% endfor %}{{ x }}|{% if t %}{% set y = 5 %}{% endif %}{{ y }}|{% set a, b = [1, 2] %}{{ a }}{{ b }}|{% set p = (3, 4) %}{{ p[1] }}",
    "{% set ns = namespace(total=0, names=[]) %}{% for p in people %}{% set ns.total = ns.total + p.age %}{% set ns.names = ns.names + [p.name] %}{% endfor %}{{ ns.total }} {{ ns.names }} {{ ns }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bo', '?') }} {{ greet(punct='.', name='Cy') }} [{{ greet() }}]",
    "{% macro fact(k) %}{% if k <= 1 %}1{% else %}{{ k * fact(k - 1)|int }}{% endif %}{% endmacro %}{{ fact(6) }}|{% macro late() %}{{ z }}{% endmacro %}{% set z = 'late-bound' %}{{ late() }}",
    "{% set block %}  inner {{ n }}  {% endset %}[{{ block }}]{% set b2 | upper %}shout{% endset %}{{ b2 }}|{% filter upper %}abc{{ n }}{% endfilter %}|{% with q = n + 1 %}{{ q }}{% endwith %}{{ q }}|{% raw %}{{ not rendered }}{% endraw %}",
    "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b=2) }} {{ namespace(a=1).a }} {{ strftime_now('%Y-%m-%d %H:%M:%S %A %B %-d %j') }}",
    # whitespace control, trim_blocks, lstrip_blocks
    "a\n  {% if t %}\n  b\n  {% endif %}\nc\n  {{ n }}  \n",
    "a  {%- if t -%}  b  {%- endif -%}  c|{{- ' x ' -}} |  {{ n -}}  \n  {{- n }}",
    "  {%+ if t %}x{% endif +%}\ny\n  {# comment #}\nz {#- trimmed -#}  w\n",
    "{% for m in msgs %}\n    {{ m.role }}: {{ m.content }}\n{% endfor %}\n",
    "line1\r\nline2\rline3\n\n",
    # errors
    "{{ raise_exception('custom failure: ' ~ n) }}",
    "{{ undefined_name + 1 }}", "{{ undefined_name.attr }}", "{{ 1 + 'a' }}", "{{ 1 / 0 }}", "{{ xs.append(4) }}",
    "{{ none|length }}", "{% for x in 5 %}{% endfor %}", "{{ 'a' < 1 }}", "{% set a, b = [1] %}",
    "{{ range(1000000)|length }}", "{{ d|tojson(indent=none) }}{{ undefined_name|tojson }}",
    "{% if %}", "{{ 1 + }}", "{% endif %}", "{% for x in xs %}", "{{ x|nofilter }}", "{{ x is notatest }}",
    "{% include 'x.html' %}", "{{ 'unterminated }}", "{# open comment", "{{ [1, 2 }}",
]


def environment():
    """jinja2 as transformers' _compile_jinja_template configures it."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return NOW.strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def variables(family, conv):
    v = {"tools": None, "documents": None}
    v.update(SPECIAL[family])
    v.update(conv)
    return v


def main():
    env = environment()
    cases = []
    for path in sorted(TEMPLATES.glob("*.jinja")):
        family = path.stem
        template = env.from_string(path.read_text(encoding="utf-8"))
        for name, conv in CONVERSATIONS.items():
            case = {"template": family, "conversation": name}
            try:
                case["expected"] = template.render(**variables(family, conv))
            except jinja2.exceptions.TemplateError as e:
                case["error"] = str(e)
                case["raised"] = type(e) is jinja2.exceptions.TemplateError
            except Exception as e:  # TypeError etc. inside the template
                case["error"] = f"{type(e).__name__}: {e}"
                case["raised"] = False
            cases.append(case)
    snippets = []
    for src in SNIPPETS:
        case = {"source": src}
        try:
            case["expected"] = env.from_string(src).render(**VARS)
        except jinja2.exceptions.TemplateError as e:
            case["error"] = str(e)
            case["raised"] = type(e) is jinja2.exceptions.TemplateError
        except Exception as e:
            case["error"] = f"{type(e).__name__}: {e}"
            case["raised"] = False
        snippets.append(case)
    doc = {
        "generated_by": "scripts/golden_chat_templates.py",
        "jinja2": jinja2.__version__,
        "now_utc": NOW.strftime("%Y-%m-%dT%H:%M:%S"),
        "special_tokens": SPECIAL,
        "conversations": CONVERSATIONS,
        "cases": cases,
        "snippet_vars": VARS,
        "snippets": snippets,
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if "--check" in sys.argv:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("golden_chat_templates: up to date" if same else "golden_chat_templates: would change")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    n_err = sum("error" in c for c in cases)
    print(f"golden_chat_templates: {len(cases)} cases ({n_err} errors) -> {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
