#!/usr/bin/env python3
"""Writes tests/data/jinja-cases.json: small templates rendered by Jinja2
in the environment Hugging Face renders chat templates with (immutable
sandbox, trim_blocks, lstrip_blocks, loopcontrols, its tojson,
raise_exception, strftime_now fixed at 2026-07-26).

test_jinja.c checks herd's engine against every case: same output, or an
error whose message contains Jinja2's. Needs python3-jinja2 only to
regenerate; the JSON is committed.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

VARS = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi <b> & 'you'"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}, {"type": "image"}]},
        {"role": "user", "content": "Ünïcödé ✓ 😀"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"x": {"type": "integer", "enum": [1, 2]}}}}}],
    "n": 5, "f": 2.5, "s": "  Hello World  ", "empty": "", "none": None, "t": True,
    "d": {"b": 2, "a": 1, "c": {"z": [1, 2, {"k": "v"}]}},
    "l": [3, 1, 2], "words": ["b", "A", "c", "a"],
}

CASES = [
    # whitespace control, trim_blocks, lstrip_blocks
    "  {% if t %}\n  yes\n  {% endif %}\n",
    "a  {%- if t -%}  b  {%- endif -%}  c",
    "a\n  {{ n }}\n  {% if t %}x{% endif %}  \nb",
    "{% for i in l %}\n  {{ i }}\n{% endfor %}\n",
    "x {# comment #}\ny\n  {# c2 #}\nz",
    "x {#- c -#}   y",
    "{% if t +%}\nkeep{%+ if t %}k{% endif %}{% endif %}",
    "line\n\t{% if t %}tab{% endif %}",
    "{% raw %}{{ not parsed }}{% endraw %}",
    "trailing newline\n",
    "a\r\nb\r\n{% if t %}\r\nc{% endif %}",
    # expressions and operators
    "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }}",
    "{{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 123456789012345678 }} {{ 1/3 }} {{ 100.0 }} {{ 1e16 }} {{ 2.5e-4 }}",
    "{{ 'a' ~ 1 ~ none ~ true ~ undefined_var }}|{{ 'ab' * 3 }}|{{ [1] * 2 }}|{{ [1, 2] + [3] }}",
    "{{ n > 3 and n < 10 }} {{ n == 5.0 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ not t }} {{ none or 'x' }} {{ 0 and 1 }}",
    "{{ 'ell' in 'hello' }} {{ 2 in l }} {{ 'a' in d }} {{ 'q' not in d }} {{ true == 1 }} {{ 'a' < 'b' }}",
    "{{ 'yes' if t else 'no' }} {{ 'yes' if none else 'no' }} [{{ 'x' if none }}]",
    "{{ l[0] }} {{ l[-1] }} {{ l[1:] }} {{ l[::-1] }} {{ l[:-1] }} {{ s[2:7] }} {{ 'hello'[::2] }} {{ 'héllo'[1] }}",
    "{{ d.a }} {{ d['b'] }} {{ d.c.z[2].k }} {{ d.missing }}|{{ d['missing'] }}|{{ l[10] }}|{{ none.x }}",
    "{{ [1, 'a', none, true, 1.5, (1,), (1, 2), {'k': [1]}] }}",
    "{{ {'a': 1, 'b': 'x'} }} {{ () }} {{ [] }} {{ {} }}",
    "{{ \"it's\" }} {{ ['it\\'s', \"q\\\"\", 'new\\nline', 'tab\\t', 'back\\\\'] }}",
    "{{ '\\u00e9\\x41\\U0001F600' }} {{ ['é', '\\x00', '\\x7f', '\\xa0', '\\u200b'] }}",
    "{{ 'a' 'b' }} {{ (1, 2) }}",
    "{{ -n }} {{ +n }} {{ -f }} {{ -(1) }} {{ 1 - -1 }}",
    # statements
    "{% set x = 1 %}{% for i in l %}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(total=0, items=[]) %}{% for i in l %}{% set ns.total = ns.total + i %}{% set ns.items = ns.items + [i] %}{% endfor %}{{ ns.total }} {{ ns.items }}",
    "{% for i in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }},{% endfor %}",
    "{% for i in l %}[{{ loop.previtem }}|{{ loop.nextitem }}]{% endfor %}",
    "{% for i in l if i > 1 %}{{ i }}:{{ loop.length }} {% endfor %}",
    "{% for i in [] %}x{% else %}empty{% endfor %}{% for i in l %}{% if i == 1 %}{% break %}{% endif %}{{ i }}{% endfor %}{% for i in l %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}",
    "{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %}{% for c in 'héj' %}[{{ c }}]{% endfor %}",
    "{% for i in l %}{% for j in l %}{{ loop.index }}{% endfor %}|{{ loop.index }} {% endfor %}",
    "{% if n > 10 %}a{% elif n > 3 %}b{% elif n > 1 %}c{% else %}d{% endif %}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}",
    "{% set block %}inner {{ n }}{% endset %}[{{ block }}]{% set up | upper %}shout{% endset %}{{ up }}",
    "{% filter upper %}hello {{ s }}{% endfilter %}",
    "{% macro greet(name, greeting='Hi', punct='!') %}{{ greeting }}, {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', 'Yo') }} {{ greet('C', punct='?') }} {{ greet(name='D') }}",
    "{% macro m() %}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, k=3) }}",
    "{% macro rec(k) %}{{ k }}{% if k > 0 %}{{ rec(k - 1) }}{% endif %}{% endmacro %}{{ rec(5) }}",
    "{% macro wrap() %}<{{ caller() }}>{% endmacro %}{% call wrap() %}inside {{ n }}{% endcall %}",
    "{% macro list_items(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) list_items(l) %}[{{ x * 2 }}]{% endcall %}",
    "{% set x = 5 %}{% macro show() %}{{ x }}{% endmacro %}{% set x = 6 %}{{ show() }}",
    "{% macro m(a) %}{{ a }}{% endmacro %}[{{ m() }}]",
    # filters
    "{{ s | trim }}|{{ s | length }}|{{ l | length }}|{{ d | length }}|{{ s | upper }}|{{ s | lower }}|{{ 'hello world-foo(bar' | title }}|{{ 'hELLO' | capitalize }}",
    "{{ l | join(', ') }}|{{ words | join }}|{{ messages | map(attribute='role') | join('/') }}|{{ l | first }}{{ l | last }}|{{ 'abc' | first }}",
    "{{ undefined_var | default('dflt') }}|{{ none | default('x') }}|{{ '' | default('e', true) }}|{{ 0 | d('z', boolean=true) }}",
    "{{ l | sort }}{{ l | sort(reverse=true) }}{{ words | sort }}{{ words | sort(case_sensitive=true) }}{{ messages | sort(attribute='role') | map(attribute='role') | list }}",
    "{{ words | unique | list }}{{ [1, 2, 1, 3] | unique | list }}{{ words | unique(case_sensitive=true) | list }}",
    "{{ l | reverse | list }}{{ 'abc' | reverse }}{{ l | min }}{{ l | max }}{{ words | max }}{{ l | sum }}{{ [1.5, 2] | sum }}",
    "{{ d | items | list }}{{ d | dictsort }}{{ d | list }}{{ 'ab' | list }}",
    "{{ l | select('odd') | list }}{{ l | reject('odd') | list }}{{ l | select('gt', 1) | list }}{{ l | select('equalto', 2) | list }}{{ [0, 1, '', 'a'] | select | list }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list }}{{ tools | selectattr('function') | list | length }}",
    "{{ messages | map(attribute='missing', default='z') | list }}{{ ['a', 'B'] | map('upper') | list }}{{ l | map('string') | join('-') }}",
    "{{ d | tojson }}|{{ messages[1] | tojson }}|{{ tools | tojson(indent=2) }}|{{ 'é\"\\n' | tojson }}|{{ [1.0, none, true] | tojson }}",
    "{{ d | tojson(sort_keys=true) }}|{{ d | tojson(separators=(',', ':')) }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ {} | tojson(indent=2) }}|{{ [] | tojson(indent=2) }}",
    "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 'x' | indent('> ', first=true) }}",
    "{{ '42' | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ 3.9 | int }} {{ '3.5' | float }} {{ 2 | float }} {{ '1e3' | int }}",
    "{{ 'abcabc' | replace('b', 'X') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ n | string }}{{ l | string }} {{ -3 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ 2.1 | round(method='ceil') }}",
    "{{ '<a href=\"x\">&\\'' | escape }}|{{ '<b>' | safe }}|{{ ('<b>' | safe) + '<i>' }}|{{ '<i>' + ('<b>' | safe) }}|{{ ('x' | safe) ~ '<' }}",
    "{{ 'one two  three' | wordcount }} {{ d | attr('a') }}",
    "{{ 'Hi {}!'.format('you') }} {{ '{0}-{1}'.format(1, 2) }} {{ '{name}'.format(name='n') }}",
    # string methods
    "{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ 'xxhixx'.strip('x') }}|{{ s.upper() }}{{ s.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}",
    "{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}{{ 'a\\nb\\r\\nc'.splitlines() }}",
    "{{ 'hello'.startswith('he') }}{{ 'hello'.endswith(('x', 'lo')) }}{{ 'hello'.replace('l', 'L') }}{{ 'hello'.find('l') }}{{ 'hello'.count('l') }}{{ '-'.join(['a', 'b']) }}",
    "{{ '123'.isdigit() }}{{ 'abc'.isalpha() }}{{ 'ABC'.isupper() }}{{ 'abc'.islower() }}{{ ' '.isspace() }}",
    "{{ d.get('a') }}{{ d.get('zz') }}{{ d.get('zz', 'dflt') }}{{ d.keys() | list }}{{ d.values() | list }}{{ d.items() | list }}",
    # tests
    "{{ n is defined }}{{ nope is defined }}{{ nope is undefined }}{{ none is none }}{{ n is number }}{{ n is integer }}{{ f is float }}{{ s is string }}{{ d is mapping }}{{ l is iterable }}{{ s is iterable }}{{ n is iterable }}",
    "{{ n is odd }}{{ n is even }}{{ 10 is divisibleby 5 }}{{ l is sequence }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ t is true }}{{ t is boolean }}{{ n is not none }}{{ 5 is eq 5 }}{{ 5 is ne 4 }}{{ 2 is in l }}{{ none is sameas none }}{{ range is callable }}",
    "{{ 3 is gt 2 }}{{ 3 is ge 3 }}{{ 3 is lt 2 }}{{ 3 is le 3 }}{{ 3 is greaterthan 1 }}{{ 'upper' is filter }}{{ 'odd' is test }}{{ n is lessthan 10 }}",
    # globals
    "{{ range(3) | list }}{{ range(1, 10, 3) | list }}{{ range(5, 0, -2) | list }}{{ dict(a=1, b=2) }}{{ namespace(a=1).a }}",
    "{{ strftime_now('%Y-%m-%d %A %B %d %b') }}",
    "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endif %}|{% endfor %}",
    "{{ 1e308 * 10 // 2 }} {{ -7.5 // 2 }} {{ 7.5 // -2 }} {{ 1[0] }}|{{ none[1:] }}|{{ 'a', 'b', }}",
    "{{ n[::-1] }}",
    "{{ d[1:] }}",
    "{{ 'aaa' | replace('', 'b', 2) }} {{ 'ab' | replace('', '-') }} {{ -5 | round }} {{ 5 | round(1) }} {{ 2.675 | round(2) }}",
    "{{ 't\u2029e' | wordcount }} {{ 'héllo wörld_1 x-y' | wordcount }}",
    "{% macro v() %}{{ varargs | length }}{{ kwargs | length }}{% endmacro %}{{ v(1, 2, a=3) }}",
    # bounds of the engine's arithmetic (fuzz findings: an empty sequence
    # repeated 449012345678 times ran for minutes; steps near 2**63
    # overflowed slice and range indices; (-1) ** 3 was 1)
    "{{ '' * 449012345678 }}|{{ [] * 449012345678 }}|{{ 'ab' * 3 }}|{{ [1, 2] * 2 }}|{{ 'x' * -1 }}|{{ 2 * 'ab' }}",
    "{{ (-1) ** 3 }} {{ (-1) ** 4 }} {{ 0 ** 0 }} {{ 0 ** 5 }} {{ 1 ** 1000000000 }} {{ (-1) ** 1000000001 }} {{ 3 ** 3 }}",
    "{{ [1, 2, 3][1::9223372036854775807] }} {{ 'abc'[2::9223372036854775807] }} {{ [1, 2, 3][::-9223372036854775807 - 1] }} {{ 'héllo'[::-2] }} {{ [1, 2, 3][5:0:-2] }}",
    "{{ range(-9223372036854775807, 9223372036854775807, 9223372036854775807) | list }} {{ range(0, 9223372036854775807, 4611686018427387904) | list }} {{ range(5, 0, -9223372036854775807 - 1) | list }} {{ range(3, -3, -2) | list }}",
    "{{ 'aXbXc'.rfind('X') }} {{ 'abc'.rfind('') }} {{ 'héllo wörld'.rfind('ö') }} {{ 'abc'.rfind('abcd') }} {{ 'aaa'.rfind('aa') }} {{ 'aaa'.find('aa') }} {{ ''.rfind('') }}",
    # a namespace holding itself: repr() prints {...}, == is identity
    "{% set ns = namespace(a=1) %}{% set ns.x = ns %}{{ ns }} {{ ns == ns }} {{ namespace(a=1) == namespace(a=1) }} {{ ns in [ns] }} {{ ns.x.x.a }}",
    "{% set ns = namespace() %}{% set ns.x = [ns, {'k': ns}] %}{{ ns }}|{{ [ns] == [ns] }}|{{ {'a': ns} == {'a': ns} }}",
    "{% set ns = namespace(d={}) %}{% set ns.d = {'a': ns, 'b': [1, (2, 3)]} %}{{ ns.d == ns.d }} {{ ns.d == {'b': [1, (2, 3)], 'a': ns} }} {{ ns.d }}",
    # errors
    "{% macro m() %}x{% endmacro %}{{ m(1) }}",
    "{% macro m(a) %}x{% endmacro %}{{ m(b=1) }}",
    "{% macro m(a) %}x{% endmacro %}{{ m(1, a=2) }}",
    "{% macro m() %}{% endmacro m %}",
    "{{ raise_exception('custom failure: ' ~ n) }}",
    "{{ undefined_var.attr }}",
    "{{ d.missing.deeper }}",
    "{{ d.missing + 1 }}",
    "{{ 'a' + 1 }}",
    "{{ 1 + 'a' }}",
    "{{ [1] + 'a' }}",
    "{{ 3 < 'a' }}",
    "{{ 1 / 0 }}",
    "{{ 1 // 0 }}",
    "{{ n | nosuchfilter }}",
    "{{ n is nosuchtest }}",
    "{{ none | list }}",
    "{% for x in n %}{% endfor %}",
    "{{ n() }}",
    "{{ undefined_fn() }}",
    "{{ l.append(4) }}",
    "{% set x.y = 1 %}",
    "{% set a, b = [1] %}",
    "{{ undefined_var | tojson }}",
    "{{ range(1000000) | length }}",
    "{{ 'a' in 1 }}",
    "{% if %}{% endif %}",
    "{% if t %}unclosed",
    "{% for x in l %}{% endif %}",
    "{{ 1 + }}",
    "{{ 'unterminated }}",
    "{% include 'x.html' %}",
    "{% nosuchtag %}",
    "{{ x | }}",
    "{{ (1, 2 }}",
    "{# unclosed comment",
    "{{ n }",
    "text {{ n",
]


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda f: datetime(2026, 7, 26).strftime(f)
    out = []
    for src in CASES:
        case = {"template": src}
        try:
            case["expected"] = env.from_string(src).render(**VARS)
        except Exception as e:  # what Jinja2 reports is the expected message
            msg = str(e)
            # Jinja2 puts "line N" in syntax errors differently; keep the text only
            case["error"] = msg.split("\n")[0]
            case["error_kind"] = "syntax" if isinstance(e, jinja2.exceptions.TemplateSyntaxError) else "render"
        out.append(case)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "jinja-cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/jinja/make_jinja_cases.py, Jinja2 " + jinja2.__version__,
                   "vars": VARS, "cases": out}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(out)} cases -> {os.path.normpath(path)}", file=sys.stderr)


if __name__ == "__main__":
    main()
